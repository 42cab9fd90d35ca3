/* minivm: boot the invariant guest, migrate it live with libvmig, or
 * receive one and check it. `minivm --help` documents the commands. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "run.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage:\n"
            "  minivm run [--mem SIZE] [--vcpus N] [--dirty-rate PAGES] [--check-rate PAGES]\n"
            "             [--hot-set SIZE] [--hot-share PCT] [--seed N] [--run-pages N]\n"
            "             [--guest FILE] [--dirty-log MODE] [--monitor] [--run-for DUR]\n"
            "             [--device-state SIZE [--device-rate N]]\n"
            "             [--migrate-to URI [--migrate-after DUR] [--verify-dest [--prefault]]]\n"
            "             [vmig options]\n"
            "  minivm run --incoming URI [--mem SIZE [--prefault]] [--device-state SIZE]\n"
            "             [--verify] [--run-for DUR]\n"
            "             [--migrate-to URI [--migrate-after DUR]] [--monitor] [--ready-fd FD]\n"
            "             [vmig options]\n"
            "  minivm run --colo-primary URI [--checkpoint DUR] [--checkpoint-log FILE]\n"
            "             [source options but --migrate-to] [vmig options]\n"
            "  minivm run --colo-secondary URI [--mem SIZE [--prefault]] [--device-state SIZE]\n"
            "             [--verify] [--run-for DUR] [--checkpoint-log FILE] [--monitor]\n"
            "             [--ready-fd FD] [vmig options]\n"
            "  minivm probe\n"
            "  minivm --help\n\n"
            "minivm is the KVM reference VMM of libvmig. It boots a small 64-bit guest\n"
            "(guest/guest.bin next to the minivm binary) whose vCPU 0 writes stamped\n"
            "pages at a given rate and whose vCPU 1 checks random pages against a\n"
            "per-page generation table, so that the guest itself notices any page that\n"
            "a migration lost or tore. Guest RAM is one KVM memory slot below 3 GiB\n"
            "(vmig block \"ram-low\") and, for larger memory, one from 4 GiB\n"
            "(\"ram-high\"); workload pages start with vmig's standard content mix.\n\n"
            "Source (without --incoming):\n"
            "  --mem SIZE            guest RAM, K/M/G suffixes, 32M..8G (default 256M)\n"
            "  --vcpus N             1..4 (default 2): vCPU 0 writes, 1 checks, others idle\n"
            "                        (with 1 vCPU it does both)\n"
            "  --dirty-rate PAGES    pages per second the writer dirties: 0 = none (its\n"
            "                        counter still runs), max = as fast as it can (default\n"
            "                        25000; K/M suffixes are powers of 1024)\n"
            "  --check-rate PAGES    pages per second the checker vCPU checks, 0 or max as\n"
            "                        above (default 5000); between batches the guest sleeps\n"
            "                        through the VMM, leaving the host CPU free\n"
            "  --hot-set SIZE        memory at the start of the workload that takes the\n"
            "                        hot share of the writes (default 64M)\n"
            "  --hot-share PCT       percent of writes that go to the hot set (default 90)\n"
            "  --seed N              seed of the initial content mix (default 1)\n"
            "  --run-pages N         the guest reports DONE after N writes (default 0: never)\n"
            "  --guest FILE          guest binary (default: <dir of minivm>/guest/guest.bin)\n"
            "  --dirty-log MODE      how KVM tracks dirty pages during a migration: bitmap\n"
            "                        (KVM_GET_DIRTY_LOG, with KVM_CLEAR_DIRTY_LOG in\n"
            "                        chunks where the kernel has manual protect) or ring\n"
            "                        (KVM_CAP_DIRTY_LOG_RING; ring:N for N entries per\n"
            "                        vCPU, a power of two, default 65536) (default bitmap)\n"
            "  --device-state SIZE   add a device with SIZE bytes of state (a multiple of 1M,\n"
            "                        up to 8G), like a GPU's memory: 256 regions that the\n"
            "                        guest's writer rewrites through I/O ports and whose\n"
            "                        words its checker reads back; saved only while the VM\n"
            "                        is stopped, it migrates as device state (vmig's\n"
            "                        devstate-path), next to the vCPU state\n"
            "  --device-rate N       region rewrites per second (default 50)\n"
            "  --migrate-to URI      migrate live to a destination (tcp:HOST:PORT, unix:PATH)\n"
            "  --migrate-after DUR   run this long first (default 3s); DUR is N, Nms, Ns, Nm\n"
            "  --verify-dest         start the destination too, as a child process on URI\n"
            "                        ('minivm run --incoming URI --mem SIZE --verify'); its\n"
            "                        exit status is part of this one's\n"
            "  --prefault            with --verify-dest: the child prefaults its RAM\n"
            "  --run-for DUR         without --migrate-to: run this long (default 10s, or\n"
            "                        until 'quit' with the monitor); after a failed\n"
            "                        migration: run until DUR from the start (default:\n"
            "                        2s more, or until 'quit' with the monitor)\n"
            "  After a successful migration the source VM stays stopped and minivm exits.\n\n"
            "Destination (--incoming URI):\n"
            "  creates the RAM slots the source announces, receives, loads the vCPU state,\n"
            "  then resumes the guest for --run-for (default 2s) and checks that its counter\n"
            "  went on and that it reported no failure.\n"
            "  --mem SIZE            create the guest's RAM before listening, as a VMM\n"
            "                        started for an incoming migration does; the source\n"
            "                        must announce the same sizes\n"
            "  --prefault            populate that RAM (and the device's buffer) before\n"
            "                        listening (MADV_POPULATE_WRITE)\n"
            "  --device-state SIZE   the source's device, of the same size: its state is\n"
            "                        loaded while it arrives\n"
            "  --verify              before resuming, check every workload page against the\n"
            "                        generation table at host speed (\"verified N pages\"),\n"
            "                        and the device's whole buffer against its seeds and the\n"
            "                        guest's record of its commands\n"
            "  --migrate-to URI      after resuming and --migrate-after (default 1s), check\n"
            "                        that the guest went on and migrate it onward (the\n"
            "                        second leg of a ping-pong)\n"
            "  --ready-fd FD         write \"listening URI\" to FD, then close it, once the\n"
            "                        listener is up (for scripts and --verify-dest)\n\n"
            "Continuous checkpoints (a standby that takes over, COLO-style):\n"
            "  --colo-primary URI    run the guest here and protect it with a standby minivm\n"
            "                        listening on URI (--colo-secondary): a live migration\n"
            "                        copies the VM there (checkpoint 0), but the guest goes\n"
            "                        on running here; then at every --checkpoint the vCPUs\n"
            "                        pause, the pages they dirtied since the last checkpoint\n"
            "                        and the device state (the vCPUs, --device-state) go to\n"
            "                        the standby, and they resume; the standby acknowledges\n"
            "                        each checkpoint once it has committed it. Output commit:\n"
            "                        the guest's console text (\"guest: ...\" lines) is held\n"
            "                        back and printed only when the first checkpoint whose\n"
            "                        pause came after it is acknowledged, so that no line is\n"
            "                        seen that the standby's copy never wrote. A line a\n"
            "                        second sums up the checkpoints since the last (pause:\n"
            "                        the vCPUs stopped; ack: resume to acknowledgement;\n"
            "                        size); the monitor's 'checkpoint' takes one at once and\n"
            "                        'info' shows their figures. The protection ends at\n"
            "                        --run-for (default 10s), 'quit' or a signal (the\n"
            "                        standby is told not to take over), or when the standby\n"
            "                        is lost: minivm says why and the guest runs on here\n"
            "                        until --run-for from the start. At the end a summary:\n"
            "                        checkpoints, pause and ack mean and maximum, bytes\n"
            "  --checkpoint DUR      time from the start of one checkpoint to the next\n"
            "                        (vmig's checkpoint-period): 100ms to 1h, or 0 for\n"
            "                        checkpoints on demand only (default 200ms)\n"
            "  --checkpoint-log FILE both sides: one line per checkpoint, in columns after a\n"
            "                        '#' header. Primary: checkpoint, pause_ns, ack_ns,\n"
            "                        bytes (its dirty pages), t_ms (its acknowledgement,\n"
            "                        from the start of the protection). Secondary:\n"
            "                        checkpoint, commit_ns (its last byte to its commit and\n"
            "                        ack), flush_ns (RAM cache into RAM), load_ns (device\n"
            "                        state and ack), bytes, t_ms\n"
            "  --colo-secondary URI  listen on URI as the standby of a --colo-primary: hold\n"
            "                        checkpoint 0 in RAM and each later checkpoint in a RAM\n"
            "                        cache until it is complete and its digests match, then\n"
            "                        commit it (flush the cache into RAM, load the device\n"
            "                        state) and acknowledge it; a checkpoint cut short is\n"
            "                        discarded. The vCPUs do not run. When the primary is\n"
            "                        gone (its connection lost, or silent for vmig's\n"
            "                        heartbeat-timeout) after checkpoint 0: failover. The\n"
            "                        last committed checkpoint's vCPU state is applied,\n"
            "                        --verify checks memory at host speed, and the guest\n"
            "                        runs for --run-for (default 2s) with the checks and the\n"
            "                        exit status of --incoming. When the primary ends the\n"
            "                        protection the guest does not run here (exit 4), nor\n"
            "                        after any other failure (exit 1, or 3 for a digest\n"
            "                        mismatch). --mem, --prefault, --device-state, --verify\n"
            "                        and --ready-fd are those of --incoming; --monitor\n"
            "                        serves the guest after a failover\n\n"
            "minivm probe: checks that KVM works here (a VM and a vCPU can be created)\n"
            "and prints what it offers: dirty-log modes, TSC, nesting. Exit 0 or 6.\n\n"
            "Both:\n"
            "  --monitor             read commands from stdin (the default when stdin is a\n"
            "                        terminal): 'migrate URI' migrates the running guest,\n"
            "                        'info', 'stop', 'cont', 'corrupt [INDEX]', 'quit',\n"
            "                        'help'; the end of input acts as 'quit'\n"
            "  -q, --quiet           no guest text, no pass or checkpoint lines, no summary\n\n");
    cli_print_common_help(f);
    fprintf(f, "  5  the guest reported a failure (a bad page, a counter jump) or its\n"
               "     counter did not continue on the destination\n"
               "  6  KVM setup failed or a vCPU stopped (halt, shutdown, internal error)\n"
               "  Code 3 also means that --verify found a bad page.\n"
               "  --colo-primary: the guest's verdict (0, 5, 6), whether or not the\n"
               "  protection lasted (its end is reported), or 1 when checkpoint 0 was never\n"
               "  acknowledged; --colo-secondary: as --incoming after a failover, 4 when the\n"
               "  primary ended the protection (or a signal the standby), 1 when the standby\n"
               "  failed.\n");
}

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    if (!strcmp(end, "ms"))
        *ms = v;
    else if (!*end || !strcmp(end, "s"))
        *ms = v * 1000;
    else if (!strcmp(end, "m"))
        *ms = v * 60000;
    else
        return -1;
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    *v = strtoull(s, &end, 0);
    return errno || end == s || *end || *s == '-' ? -1 : 0;
}

/* A rate: a count per second, or "max" (as fast as the guest can). */
static int parse_rate(const char *s, uint64_t *v)
{
    if (!strcmp(s, "max")) {
        *v = MINIVM_RATE_MAX;
        return 0;
    }
    return vmig_parse_size(s, v) || *v == MINIVM_RATE_MAX ? -1 : 0;
}

static volatile sig_atomic_t interrupted;
static void on_int(int sig)
{
    interrupted = sig;
}

bool run_interrupted(void)
{
    return interrupted != 0;
}

static const char *minivm_dirty_log_name(const struct minivm *vm)
{
    if (vm->dirty_mode == MINIVM_DIRTY_RING)
        return "ring";
    return vm->manual_protect ? "bitmap, manual protect" : "bitmap";
}

/* ---- the monitor: commands from the terminal (or a pipe) ---- */

static void monitor_help(void)
{
    fprintf(stderr, "minivm monitor commands:\n"
                    "  migrate URI   migrate the running guest live to URI (tcp:HOST:PORT,\n"
                    "                unix:PATH); on success minivm exits, on failure the\n"
                    "                guest runs on (not while it is protected)\n"
                    "  info          the guest's counters and the VM's state, and the\n"
                    "                checkpoints' figures while it is protected\n"
                    "  checkpoint    with --colo-primary: take a checkpoint now\n"
                    "  stop, cont    pause and resume the vCPUs\n"
                    "  corrupt [I]   flip a bit in a page the guest wrote (the first from\n"
                    "                page index I): the guest's checker must report it\n"
                    "  quit          stop the guest and exit\n"
                    "  help          this text\n");
}

/* `corrupt [INDEX]`: flip one bit of a pattern word of a workload page the
 * guest has written (the first such page from INDEX, default the start of
 * the hot set), to show that the guest's checker notices. For tests and
 * demonstrations; the writer may rewrite the page before the checker looks. */
static void monitor_corrupt(struct minivm *vm, const char *arg)
{
    struct minivm_config *c = minivm_config_page(vm);
    const uint32_t *gen =
        c ? minivm_gpa(vm, MINIVM_GEN_TABLE, 4 * (c->data_first + c->data_pages)) : NULL;
    if (!gen) {
        fprintf(stderr, "minivm: no guest RAM to corrupt\n");
        return;
    }
    uint64_t i = c->hot_first;
    while (*arg == ' ')
        arg++;
    if (*arg && (parse_u64(arg, &i) || i < c->data_first)) {
        fprintf(stderr, "minivm: usage: corrupt [INDEX] (INDEX >= %llu)\n",
                (unsigned long long)c->data_first);
        return;
    }
    for (; i < c->data_first + c->data_pages; i++) {
        uint32_t e = __atomic_load_n(&gen[i], __ATOMIC_ACQUIRE);
        if (e && !(e & 1))
            break;
    }
    uint64_t *pg = i < c->data_first + c->data_pages ? minivm_page_ptr(vm, i) : NULL;
    if (!pg) {
        fprintf(stderr, "minivm: no page written by the guest yet\n");
        return;
    }
    __atomic_fetch_xor(&pg[5], 1ull << 17, __ATOMIC_SEQ_CST);
    fprintf(stderr, "minivm: flipped bit 17 of word 5 of page %llu\n", (unsigned long long)i);
}

/* One command line; returns true when run_guest must return `*end`. */
static bool monitor_line(struct minivm *vm, struct monitor *m, char *line, enum run_end *end)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strlen(line);
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
        line[--n] = 0;
    if (!*line)
        return false;
    if (!strncmp(line, "migrate", 7) && (line[7] == ' ' || line[7] == '\t' || !line[7])) {
        const char *uri = line + 7;
        while (*uri == ' ' || *uri == '\t')
            uri++;
        if (!*uri || strlen(uri) >= sizeof(m->uri)) {
            fprintf(stderr, "minivm: usage: migrate URI\n");
            return false;
        }
        if (m->colo) {
            fprintf(stderr, "minivm: migrate: not while the guest is protected by checkpoints "
                            "('quit' ends both)\n");
            return false;
        }
        snprintf(m->uri, sizeof(m->uri), "%s", uri);
        *end = RUN_MIGRATE;
        return true;
    }
    if (!strcmp(line, "info")) {
        print_guest(vm, "now");
        fprintf(stderr, "minivm: vCPUs %s\n",
                __atomic_load_n(&vm->pause_req, __ATOMIC_SEQ_CST) ? "stopped" : "running");
        if (m->colo)
            colo_monitor_info(m->colo);
    } else if (!strcmp(line, "checkpoint")) {
        if (m->colo)
            colo_monitor_checkpoint(m->colo);
        else
            fprintf(stderr, "minivm: checkpoint: the guest is not protected (--colo-primary)\n");
    } else if (!strcmp(line, "stop")) {
        minivm_vcpus_pause(vm);
        fprintf(stderr, "minivm: vCPUs stopped\n");
    } else if (!strcmp(line, "cont")) {
        minivm_vcpus_resume(vm);
        fprintf(stderr, "minivm: vCPUs running\n");
    } else if (!strncmp(line, "corrupt", 7) && (!line[7] || line[7] == ' ')) {
        monitor_corrupt(vm, line + 7);
    } else if (!strcmp(line, "quit") || !strcmp(line, "q")) {
        *end = RUN_QUIT;
        return true;
    } else if (!strcmp(line, "help") || !strcmp(line, "?")) {
        monitor_help();
    } else {
        fprintf(stderr, "minivm: unknown command '%s' (try help)\n", line);
    }
    return false;
}

/* Read what stdin has; returns true when a command ends the wait. */
static bool monitor_poll(struct minivm *vm, struct monitor *m, int timeout_ms, enum run_end *end)
{
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return false;
    ssize_t r = read(0, m->buf + m->len, sizeof(m->buf) - 1 - m->len);
    if (r <= 0) {
        m->eof = true;
        if (m->len) { /* a last line without a newline */
            m->buf[m->len] = 0;
            m->len = 0;
            if (monitor_line(vm, m, m->buf, end))
                return true;
        }
        *end = RUN_QUIT;
        return true;
    }
    m->len += (size_t)r;
    char *nl;
    while ((nl = memchr(m->buf, '\n', m->len))) {
        *nl = 0;
        char line[sizeof(m->buf)];
        memcpy(line, m->buf, (size_t)(nl - m->buf) + 1);
        size_t used = (size_t)(nl - m->buf) + 1;
        memmove(m->buf, nl + 1, m->len - used);
        m->len -= used;
        if (monitor_line(vm, m, line, end))
            return true;
    }
    if (m->len == sizeof(m->buf) - 1) {
        fprintf(stderr, "minivm: monitor line too long, dropped\n");
        m->len = 0;
    }
    return false;
}

enum run_end run_guest(struct minivm *vm, struct monitor *m, uint64_t ms)
{
    uint64_t start = now_ms();
    for (;;) {
        if (interrupted)
            return RUN_SIGNAL;
        if (__atomic_load_n(&vm->guest_failed, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&vm->vm_error, __ATOMIC_SEQ_CST))
            return RUN_FAILED;
        uint64_t t = now_ms();
        if (ms != UINT64_MAX && t - start >= ms)
            return RUN_TIMEOUT;
        uint64_t left = ms == UINT64_MAX ? 10 : ms - (t - start);
        int wait = left < 10 ? (int)left : 10;
        enum run_end end;
        if (m && m->on && !m->eof) {
            if (monitor_poll(vm, m, wait, &end))
                return end;
        } else {
            struct timespec ts = {0, (long)wait * 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

void print_guest(struct minivm *vm, const char *when)
{
    struct minivm_config *c = minivm_config_page(vm);
    if (!c)
        return;
    double gap_ms = vm->tsc_khz ? (double)c->max_gap_tsc / (double)vm->tsc_khz : 0;
    fprintf(stderr,
            "minivm: guest %s: counter %llu, writes %llu, checks %llu, longest stall %.1f ms\n",
            when, (unsigned long long)c->counter, (unsigned long long)c->writes,
            (unsigned long long)c->checks, gap_ms);
}

int vm_verdict(struct minivm *vm)
{
    if (__atomic_load_n(&vm->guest_failed, __ATOMIC_SEQ_CST))
        return MINIVM_EXIT_GUEST;
    if (__atomic_load_n(&vm->vm_error, __ATOMIC_SEQ_CST))
        return MINIVM_EXIT_VM;
    return MINIVM_EXIT_OK;
}

/* ---- vmig hooks ---- */
uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int hook_log_start(void *opaque)
{
    struct hook_ctx *h = opaque;
    /* From here on the guest's longest gap is pre-copy's (the guest only
     * ever raises it, so a reset racing with its update is harmless). */
    struct minivm_config *c = minivm_config_page(h->vm);
    if (c)
        __atomic_store_n(&c->max_gap_tsc, 0, __ATOMIC_SEQ_CST);
    return minivm_dirty_log_set(h->vm, true) ? VMIG_EIO : 0;
}
static void hook_log_stop(void *opaque)
{
    struct hook_ctx *h = opaque;
    minivm_dirty_log_set(h->vm, false);
}
static int hook_dirty_sync(void *opaque, uint32_t block, const char *name, uint64_t *bitmap,
                           uint64_t npages)
{
    (void)block;
    struct hook_ctx *h = opaque;
    unsigned n = !strcmp(name, "ram-low") ? 0 : 1;
    uint64_t t = now_ns();
    int rc = minivm_dirty_sync_slot(h->vm, n, bitmap, npages);
    t = now_ns() - t;
    h->st.syncs++;
    h->st.sync_ns_total += t;
    if (t > h->st.sync_ns_max)
        h->st.sync_ns_max = t;
    return rc ? VMIG_EIO : 0;
}
static void hook_throttle(void *opaque, unsigned pct)
{
    struct hook_ctx *h = opaque;
    minivm_vcpus_throttle(h->vm, pct);
}
static int hook_stop(void *opaque)
{
    struct hook_ctx *h = opaque;
    minivm_vcpus_pause(h->vm);
    struct minivm_config *c = minivm_config_page(h->vm);
    if (c) {
        h->st.precopy_gap = c->max_gap_tsc;
        h->st.precopy_gap_valid = true;
    }
    if (h->seal_on_stop)
        minivm_console_seal(h->seal_on_stop);
    return 0;
}
static void hook_resume(void *opaque)
{
    struct hook_ctx *h = opaque;
    minivm_vcpus_resume(h->vm);
}

void run_vm_ops(vmig_vm_ops *ops)
{
    *ops = (vmig_vm_ops){.log_start = hook_log_start,
                         .dirty_sync = hook_dirty_sync,
                         .log_stop = hook_log_stop,
                         .throttle = hook_throttle,
                         .stop = hook_stop,
                         .resume = hook_resume};
}

/* The VM's devices: the vCPUs, and the synthetic device when there is one. */
int register_devices(vmig_session *s, struct minivm *vm, vmig_error *err)
{
    int rc = vmig_device_register(s, "cpus", 0, &minivm_cpus_ops, vm, err);
    if (!rc && vm->sdev)
        rc = vmig_device_register(s, "minivm-sdev", 0, &minivm_sdev_ops, vm->sdev, err);
    return rc;
}

static int block_cb(void *opaque, vmig_session *s, const char *name, uint64_t length,
                    uint32_t page_size)
{
    struct minivm *vm = opaque;
    unsigned n;
    if (!strcmp(name, "ram-low"))
        n = 0;
    else if (!strcmp(name, "ram-high"))
        n = 1;
    else
        return VMIG_ENOENT;
    if (page_size != MINIVM_PAGE || length == 0 || length % MINIVM_PAGE ||
        (n == 0 && length > MINIVM_LOW_MAX) || (n == 1 && length > (8ull << 30)))
        return VMIG_EINVAL;
    if (vm->slot[n].host) { /* created by --mem: the sizes must agree */
        if (vm->slot[n].size != length) {
            fprintf(stderr, "minivm: the source's %s is %llu bytes, this VM's is %llu (--mem)\n",
                    name, (unsigned long long)length, (unsigned long long)vm->slot[n].size);
            return VMIG_EINVAL;
        }
    } else if (minivm_slot_create(vm, n, length)) {
        return VMIG_ENOMEM;
    }
    return vmig_ram_add(s, name, vm->slot[n].host, length, MINIVM_PAGE, VMIG_RAM_ZEROED, NULL);
}

void run_event_cb(void *opaque, vmig_session *s, const vmig_event *ev)
{
    (void)s;
    const struct run_opts *ro = opaque;
    if (ev->type == VMIG_EVENT_NOTICE && ev->message && !ro->o.quiet)
        fprintf(stderr, "minivm: notice: %s\n", ev->message);
    if (ro->o.quiet || ro->o.progress > 0 || (ro->o.progress < 0 && isatty(2)))
        return;
    if (ev->type == VMIG_EVENT_PASS)
        fprintf(stderr,
                "minivm: pass %u: remaining %.1f MiB, dirty %.1f MB/s, link %.1f MB/s, "
                "downtime ~%.0f ms, throttle %u%%\n",
                ev->pass, (double)ev->remaining_bytes / 1048576.0, (double)ev->dirty_rate / 1e6,
                (double)ev->bandwidth / 1e6, (double)ev->expected_downtime_ns / 1e6,
                ev->throttle_pct);
    else if (ev->type == VMIG_EVENT_SWITCHOVER)
        fprintf(stderr, "minivm: switchover after pass %u, %.1f MiB left\n", ev->pass,
                (double)ev->remaining_bytes / 1048576.0);
}

static int do_migrate(vmig_session *s, void *arg, vmig_error *err)
{
    return vmig_migrate(s, arg, err);
}
static int do_incoming(vmig_session *s, void *arg, vmig_error *err)
{
    (void)arg;
    return vmig_incoming_run(s, err);
}

/* Start 'minivm run --incoming URI --verify' as a child and wait until it
 * listens (it writes a line to --ready-fd). */
static pid_t spawn_dest(const struct run_opts *ro)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    int p[2];
    if (n <= 0 || pipe(p))
        return -1;
    self[n] = 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        char ch[16], mem[32], fd[16], dev[32], dbuf[64];
        snprintf(ch, sizeof(ch), "%u", ro->o.params.channels);
        snprintf(mem, sizeof(mem), "%llu", (unsigned long long)ro->mem);
        snprintf(fd, sizeof(fd), "%d", p[1]);
        const char *argv[24];
        int a = 0;
        argv[a++] = self;
        argv[a++] = "run";
        argv[a++] = "--incoming";
        argv[a++] = ro->migrate_to;
        argv[a++] = "--verify";
        argv[a++] = "--mem";
        argv[a++] = mem;
        if (ro->prefault)
            argv[a++] = "--prefault";
        if (ro->device_state) {
            snprintf(dev, sizeof(dev), "%llu", (unsigned long long)ro->device_state);
            argv[a++] = "--device-state";
            argv[a++] = dev;
        }
        argv[a++] = "--ready-fd";
        argv[a++] = fd;
        argv[a++] = "-c";
        argv[a++] = ch;
        /* The destination's own parameter, when given to the source. */
        snprintf(dbuf, sizeof(dbuf), "devstate-buffer=%llu",
                 (unsigned long long)ro->o.params.devstate_buffer);
        argv[a++] = "-o";
        argv[a++] = dbuf;
        argv[a++] = ro->o.quiet ? "-q" : "--no-progress";
        if (ro->o.json)
            argv[a++] = "--json";
        argv[a] = NULL;
        execv(self, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -1;
    }
    char line[64];
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    ssize_t r = poll(&pfd, 1, 60000) == 1 ? read(p[0], line, sizeof(line)) : -1;
    close(p[0]);
    if (r <= 0) {
        fprintf(stderr, "minivm: the destination did not start listening\n");
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* Migrate the running guest to `uri`. 0 on success (the VM is then
 * stopped for good), else the vmig error; the guest runs on. */
static int migrate_out(struct run_opts *ro, struct minivm *vm, const char *uri)
{
    if (!ro->o.quiet)
        print_guest(vm, "before migration");
    vmig_session *s = NULL;
    vmig_error err = {0};
    struct hook_ctx h = {.vm = vm};
    int rc = vmig_session_create(&s, VMIG_ROLE_SOURCE, &ro->o.params, &err);
    if (!rc)
        rc = vmig_ram_add(s, "ram-low", vm->slot[0].host, vm->slot[0].size, MINIVM_PAGE, 0, &err);
    if (!rc && vm->slot[1].size)
        rc = vmig_ram_add(s, "ram-high", vm->slot[1].host, vm->slot[1].size, MINIVM_PAGE, 0, &err);
    vmig_vm_ops ops;
    run_vm_ops(&ops);
    if (!rc)
        rc = vmig_set_vm_ops(s, &ops, &h);
    if (!rc)
        rc = register_devices(s, vm, &err);
    if (!rc)
        rc = vmig_set_event_cb(s, run_event_cb, ro);
    if (!rc)
        rc = cli_run(s, do_migrate, (void *)uri, &ro->o, "minivm", &err);
    vmig_stats st = {0};
    if (s)
        vmig_stats_get(s, &st);
    double gap_ms =
        h.st.precopy_gap_valid && vm->tsc_khz ? (double)h.st.precopy_gap / (double)vm->tsc_khz : -1;
    char extra[512];
    struct minivm_config *c = minivm_config_page(vm);
    snprintf(extra, sizeof(extra),
             "\"minivm\":{\"dirty_log\":\"%s\",\"syncs\":%u,\"sync_ms_max\":%.3f,"
             "\"sync_ms_total\":%.3f,\"precopy_stall_ms\":%.3f,\"guest_writes\":%llu,"
             "\"guest_counter\":%llu}",
             minivm_dirty_log_name(vm), h.st.syncs, (double)h.st.sync_ns_max / 1e6,
             (double)h.st.sync_ns_total / 1e6, gap_ms, (unsigned long long)(c ? c->writes : 0),
             (unsigned long long)(c ? c->counter : 0));
    cli_print_summary("sender", rc, &err, &st, cli_process_cpu(), &ro->o, extra);
    if (!ro->o.quiet) {
        fprintf(stderr, "minivm: dirty log (%s): %u syncs, longest %.2f ms, %.1f ms in all\n",
                minivm_dirty_log_name(vm), h.st.syncs, (double)h.st.sync_ns_max / 1e6,
                (double)h.st.sync_ns_total / 1e6);
        if (vm->dirty_mode == MINIVM_DIRTY_RING) {
            struct minivm_ring_stats rs;
            minivm_dirty_ring_stats(vm, &rs);
            fprintf(stderr,
                    "minivm: dirty ring: %llu entries in %llu harvests (%.1f ms, longest "
                    "%.2f ms), %llu ring-full exits, %llu overflows\n",
                    (unsigned long long)rs.entries, (unsigned long long)rs.harvests,
                    (double)rs.harvest_ns / 1e6, (double)rs.harvest_max_ns / 1e6,
                    (unsigned long long)rs.full_exits, (unsigned long long)rs.overflows);
        }
        if (gap_ms >= 0)
            fprintf(stderr, "minivm: the guest's longest stall while pre-copy ran: %.1f ms\n",
                    gap_ms);
    }
    if (rc)
        fprintf(stderr, "minivm: migration to %s failed: %s; the guest runs on\n", uri, err.msg);
    vmig_session_free(s);
    return rc;
}

/* The running guest's life on this host: wait, migrate when told (by the
 * options or the monitor), and keep it running after a failed migration.
 * `deadline_ms` (UINT64_MAX: none) bounds the run without a migration. */
int run_vm(struct run_opts *ro, struct minivm *vm, struct monitor *m, const char *uri,
           uint64_t migrate_after_ms, uint64_t run_ms)
{
    uint64_t start = now_ms();
    bool migrated = false;
    int mig_rc = 0;
    enum run_end end = run_guest(vm, m, uri ? migrate_after_ms : run_ms);
    for (;;) {
        if (end == RUN_TIMEOUT && uri) {
            end = RUN_MIGRATE;
        } else if (end == RUN_MIGRATE && !uri) {
            uri = m->uri;
        }
        if (end != RUN_MIGRATE)
            break;
        mig_rc = migrate_out(ro, vm, uri);
        if (!mig_rc) {
            migrated = true;
            break;
        }
        uri = NULL;
        /* Failed: the guest runs on (a while, to show that it does). */
        uint64_t until = ro->run_for_set ? start + ro->run_for_ms : now_ms() + 2000;
        if (m && m->on && !m->eof && !ro->run_for_set)
            until = UINT64_MAX;
        end = run_guest(vm, m,
                        until == UINT64_MAX ? UINT64_MAX
                        : now_ms() < until  ? until - now_ms()
                                            : 0);
        if (end == RUN_TIMEOUT)
            break;
    }
    minivm_vcpus_pause(vm);
    if (!ro->o.quiet)
        print_guest(vm, migrated ? "at switchover" : "at the end");
    minivm_vcpus_stop(vm);
    int code = vm_verdict(vm);
    if (code == MINIVM_EXIT_OK && mig_rc && !migrated)
        code = cli_exit_code(mig_rc);
    if (code == MINIVM_EXIT_OK && end == RUN_SIGNAL)
        code = MINIVM_EXIT_MIGRATE;
    return code;
}

static int cmd_source(struct run_opts *ro, struct minivm *vm)
{
    if (minivm_layout_mem(vm, ro->mem) || minivm_setup_long_mode_tables(vm))
        return MINIVM_EXIT_VM;
    char path[PATH_MAX + 32];
    if (!ro->guest) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
            return MINIVM_EXIT_VM;
        self[n] = 0;
        snprintf(path, sizeof(path), "%s/guest/guest.bin", dirname(self));
        ro->guest = path;
    }
    if (minivm_load_guest(vm, ro->guest) || minivm_vcpus_create(vm, ro->vcpus))
        return MINIVM_EXIT_VM;
    struct minivm_config *c = minivm_config_page(vm);
    memset(c, 0, sizeof(*c));
    c->magic = MINIVM_CONFIG_MAGIC;
    c->seed = ro->seed;
    c->slot0_pages = vm->slot[0].size / MINIVM_PAGE;
    c->slot1_pages = vm->slot[1].size / MINIVM_PAGE;
    c->data_first = MINIVM_DATA_START / MINIVM_PAGE;
    c->data_pages = c->slot0_pages + c->slot1_pages - c->data_first;
    c->hot_first = c->data_first;
    c->hot_pages =
        ro->hot_set / MINIVM_PAGE < c->data_pages ? ro->hot_set / MINIVM_PAGE : c->data_pages;
    c->hot_share = ro->hot_share_pct * 1024 / 100;
    c->rate = ro->rate;
    c->check_rate = ro->check_rate;
    c->tsc_khz = vm->tsc_khz;
    c->run_pages = ro->run_pages;
    c->nvcpus = ro->vcpus;
    for (unsigned i = 0; i < ro->vcpus; i++)
        c->role[i] = i == 0 ? MINIVM_ROLE_WRITER : i == 1 ? MINIVM_ROLE_CHECKER : MINIVM_ROLE_IDLE;
    uint64_t t = now_ms();
    if (ro->device_state) {
        if (minivm_sdev_create(ro->device_state, true, &vm->sdev)) {
            fprintf(stderr, "minivm: cannot create %llu MiB of device state\n",
                    (unsigned long long)(ro->device_state >> 20));
            return MINIVM_EXIT_VM;
        }
        c->dev_regions = MINIVM_DEV_REGIONS;
        c->dev_region_words = minivm_sdev_region_words(vm->sdev);
        c->dev_cmd_rate = ro->device_rate;
        if (!ro->o.quiet)
            fprintf(stderr,
                    "minivm: device with %llu MiB of state (%u regions of %llu KiB), %llu "
                    "rewrites/s, filled in %llu ms\n",
                    (unsigned long long)(ro->device_state >> 20), MINIVM_DEV_REGIONS,
                    (unsigned long long)(c->dev_region_words * 8 >> 10),
                    (unsigned long long)ro->device_rate, (unsigned long long)(now_ms() - t));
        t = now_ms();
    }
    if (minivm_fill_mix(vm, ro->seed)) {
        fprintf(stderr, "minivm: cannot fill the initial content\n");
        return MINIVM_EXIT_VM;
    }
    for (unsigned i = 0; i < ro->vcpus; i++)
        if (minivm_vcpu_boot_state(&vm->vcpu[i]))
            return MINIVM_EXIT_VM;
    if (!ro->o.quiet)
        fprintf(stderr,
                "minivm: %llu MiB in %s, %u vCPUs, TSC %llu kHz, dirty log %s, content in "
                "%llu ms\n",
                (unsigned long long)(ro->mem >> 20), vm->slot[1].size ? "2 slots" : "1 slot",
                ro->vcpus, (unsigned long long)vm->tsc_khz, minivm_dirty_log_name(vm),
                (unsigned long long)(now_ms() - t));
    pid_t child = -1;
    if (ro->migrate_to && ro->verify_dest && (child = spawn_dest(ro)) < 0)
        return MINIVM_EXIT_VM;
    if (minivm_vcpus_start(vm)) {
        if (child > 0)
            kill(child, SIGTERM), waitpid(child, NULL, 0);
        return MINIVM_EXIT_VM;
    }
    struct monitor m = {.on = ro->monitor};
    if (m.on && !ro->o.quiet)
        fprintf(stderr, "minivm: monitor on stdin ('help' for commands)\n");
    uint64_t run_ms = ro->run_for_set || !m.on ? ro->run_for_ms : UINT64_MAX;
    int code = ro->colo_primary ? colo_primary_run(ro, vm, &m)
                                : run_vm(ro, vm, &m, ro->migrate_to, ro->migrate_after_ms, run_ms);
    if (child > 0) {
        int status = 0;
        if (code != MINIVM_EXIT_OK)
            kill(child, SIGTERM);
        waitpid(child, &status, 0);
        int dc = WIFEXITED(status) ? WEXITSTATUS(status) : MINIVM_EXIT_VM;
        if (!ro->o.quiet)
            fprintf(stderr, "minivm: destination exited with %d\n", dc);
        if (code == MINIVM_EXIT_OK)
            code = dc;
    }
    return code;
}

int dest_setup(struct run_opts *ro, struct minivm *vm)
{
    if (ro->device_state) {
        uint64_t t = now_ms();
        if (minivm_sdev_create(ro->device_state, false, &vm->sdev) ||
            (ro->prefault && minivm_sdev_prefault(vm->sdev))) {
            fprintf(stderr, "minivm: cannot map %llu MiB of device state\n",
                    (unsigned long long)(ro->device_state >> 20));
            return MINIVM_EXIT_VM;
        }
        if (!ro->o.quiet)
            fprintf(stderr, "minivm: device with %llu MiB of state %s in %llu ms\n",
                    (unsigned long long)(ro->device_state >> 20),
                    ro->prefault ? "prefaulted" : "mapped", (unsigned long long)(now_ms() - t));
    }
    if (ro->mem_set) {
        uint64_t t = now_ms();
        if (minivm_layout_mem(vm, ro->mem) || (ro->prefault && minivm_prefault(vm)))
            return MINIVM_EXIT_VM;
        if (!ro->o.quiet)
            fprintf(stderr, "minivm: %llu MiB of RAM %s in %llu ms\n",
                    (unsigned long long)(ro->mem >> 20), ro->prefault ? "prefaulted" : "mapped",
                    (unsigned long long)(now_ms() - t));
    }
    return 0;
}

int dest_listen(struct run_opts *ro, struct minivm *vm, vmig_session **out, vmig_error *err)
{
    vmig_session *s = NULL;
    int rc = vmig_session_create(&s, VMIG_ROLE_DEST, &ro->o.params, err);
    if (!rc)
        rc = register_devices(s, vm, err);
    if (!rc)
        rc = vmig_incoming_set_block_cb(s, block_cb, vm);
    if (!rc)
        rc = vmig_incoming_listen(s, ro->incoming, err);
    char uri[256] = "";
    if (!rc)
        vmig_incoming_uri(s, uri, sizeof(uri));
    if (!rc && !ro->o.quiet)
        fprintf(stderr, "minivm: listening on %s%s\n", uri,
                ro->colo_secondary ? " for continuous checkpoints (standby)" : "");
    if (!rc && ro->ready_fd >= 0) {
        dprintf(ro->ready_fd, "listening %s\n", uri);
        close(ro->ready_fd);
    }
    *out = s;
    return rc;
}

static int cmd_dest(struct run_opts *ro, struct minivm *vm)
{
    int code = dest_setup(ro, vm);
    if (code)
        return code;
    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = dest_listen(ro, vm, &s, &err);
    if (!rc && ro->colo_secondary)
        return colo_secondary_run(ro, vm, s);
    if (!rc)
        rc = cli_run(s, do_incoming, NULL, &ro->o, "minivm-dest", &err);
    vmig_stats st = {0};
    if (s)
        vmig_stats_get(s, &st);
    if (!ro->o.quiet || ro->o.json)
        cli_print_summary("receiver", rc, &err, &st, cli_process_cpu(), &ro->o, NULL);
    vmig_session_free(s);
    if (rc) {
        fprintf(stderr, "minivm: incoming migration failed: %s\n", err.msg);
        if (vm->sdev && minivm_sdev_refusal(vm->sdev)[0])
            fprintf(stderr, "minivm: the device's state was refused: %s\n",
                    minivm_sdev_refusal(vm->sdev));
        return cli_exit_code(rc);
    }
    return dest_resume(ro, vm, "as received");
}

int dest_resume(struct run_opts *ro, struct minivm *vm, const char *what)
{
    if (!vm->slot[0].host || vm->nvcpus == 0 || !minivm_config_page(vm)) {
        /* A hostile or broken source can send a low RAM block too small to
         * hold the config page: nothing below may then read it. */
        fprintf(stderr, "minivm: the source sent no low RAM with a config page, or no vCPU "
                        "state\n");
        return MINIVM_EXIT_MIGRATE;
    }
    if (ro->verify) {
        uint64_t n, t = now_ms();
        char msg[300];
        if (minivm_verify(vm, &n, msg, sizeof(msg))) {
            fprintf(stderr, "minivm: verify: %s (%llu pages good before it)\n", msg,
                    (unsigned long long)n);
            return MINIVM_EXIT_VERIFY;
        }
        fprintf(stderr, "minivm: verified %llu pages in %llu ms\n", (unsigned long long)n,
                (unsigned long long)(now_ms() - t));
        if (vm->sdev) {
            uint64_t cmds;
            t = now_ms();
            if (minivm_sdev_verify(vm->sdev, minivm_config_page(vm), &cmds, msg, sizeof(msg))) {
                fprintf(stderr, "minivm: verify: %s\n", msg);
                return MINIVM_EXIT_VERIFY;
            }
            fprintf(stderr,
                    "minivm: verified device state: %llu MiB in %u regions after %llu rewrites, "
                    "as the guest's commands imply, in %llu ms\n",
                    (unsigned long long)(minivm_sdev_size(vm->sdev) >> 20), MINIVM_DEV_REGIONS,
                    (unsigned long long)cmds, (unsigned long long)(now_ms() - t));
        }
    }
    struct minivm_config *c = minivm_config_page(vm);
    uint64_t before = c->counter, dev_before = c->dev_checks;
    if (vm->sdev && c->dev_regions != MINIVM_DEV_REGIONS) {
        fprintf(stderr, "minivm: this VM has a device (--device-state), the source's guest none\n");
        return MINIVM_EXIT_MIGRATE;
    }
    if (minivm_state_apply_tsc(vm)) {
        fprintf(stderr, "minivm: cannot restore the TSC\n");
        return MINIVM_EXIT_VM;
    }
    if (!ro->o.quiet)
        print_guest(vm, what);
    if (minivm_vcpus_start(vm))
        return MINIVM_EXIT_VM;
    struct monitor m = {.on = ro->monitor};
    if (ro->migrate_to) {
        /* Onward (ping-pong): run, check that the guest went on, migrate. */
        enum run_end end = run_guest(vm, &m, ro->migrate_after_set ? ro->migrate_after_ms : 1000);
        if (end == RUN_TIMEOUT && c->counter <= before) {
            fprintf(stderr, "minivm: the guest's counter did not continue (%llu -> %llu)\n",
                    (unsigned long long)before, (unsigned long long)c->counter);
            minivm_vcpus_stop(vm);
            return MINIVM_EXIT_GUEST;
        }
        if (end != RUN_TIMEOUT && end != RUN_MIGRATE) {
            minivm_vcpus_stop(vm);
            return vm_verdict(vm) ? vm_verdict(vm) : MINIVM_EXIT_MIGRATE;
        }
        return run_vm(ro, vm, &m, ro->migrate_to, 0, 0);
    }
    uint64_t run_ms = ro->run_for_set ? ro->run_for_ms : m.on ? UINT64_MAX : 2000;
    enum run_end end = run_guest(vm, &m, run_ms);
    if (end == RUN_MIGRATE) /* told from the monitor: this host is a source now */
        return run_vm(ro, vm, &m, m.uri, 0, 0);
    minivm_vcpus_pause(vm);
    uint64_t after = c->counter;
    if (!ro->o.quiet)
        print_guest(vm, "after the run here");
    minivm_vcpus_stop(vm);
    int code = vm_verdict(vm);
    if (code == MINIVM_EXIT_OK && after <= before) {
        fprintf(stderr, "minivm: the guest's counter did not continue (%llu -> %llu)\n",
                (unsigned long long)before, (unsigned long long)after);
        code = MINIVM_EXIT_GUEST;
    }
    if (code == MINIVM_EXIT_OK && vm->sdev && c->dev_checks <= dev_before) {
        fprintf(stderr, "minivm: the guest checked no device word after the migration\n");
        code = MINIVM_EXIT_GUEST;
    }
    if (code == MINIVM_EXIT_OK && !ro->o.quiet)
        fprintf(stderr,
                "minivm: guest ran on: counter %llu -> %llu; its verdict: no bad page in %llu "
                "checks, no counter jump\n",
                (unsigned long long)before, (unsigned long long)after,
                (unsigned long long)c->checks);
    if (code == MINIVM_EXIT_OK && !ro->o.quiet && vm->sdev)
        fprintf(stderr,
                "minivm: the guest read %llu device words back here (%llu in all), all as its "
                "commands imply\n",
                (unsigned long long)(c->dev_checks - dev_before),
                (unsigned long long)c->dev_checks);
    return code;
}

static int cmd_run(int argc, char **argv)
{
    struct run_opts ro = {.mem = 256ull << 20,
                          .vcpus = 2,
                          .rate = 25000,
                          .check_rate = 5000,
                          .hot_set = 64ull << 20,
                          .hot_share_pct = 90,
                          .seed = 1,
                          .migrate_after_ms = 3000,
                          .run_for_ms = 10000,
                          .device_rate = 50,
                          .ready_fd = -1};
    vmig_params_init(&ro.o.params);
    /* --checkpoint's default (the example), before -o may change it. */
    ro.o.params.checkpoint_period_ms = 200;
    ro.o.progress = -1;
    bool checkpoint_set = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        /* minivm's own options first: vmig has a parameter "verify" too. */
        static const char *const own[] = {
            "-h",           "--help",           "--verify",         "--verify-dest",
            "--prefault",   "--monitor",        "--ready-fd",       "--dirty-log",
            "--mem",        "--vcpus",          "--dirty-rate",     "--check-rate",
            "--hot-set",    "--hot-share",      "--seed",           "--run-pages",
            "--guest",      "--migrate-to",     "--incoming",       "--migrate-after",
            "--run-for",    "--device-state",   "--device-rate",    "--colo-primary",
            "--checkpoint", "--colo-secondary", "--checkpoint-log", NULL};
        bool mine = false;
        for (int k = 0; own[k]; k++)
            mine |= !strcmp(a, own[k]);
        if (!mine) {
            int r = cli_common_opt(&ro.o, argc, argv, &i);
            if (r < 0)
                return MINIVM_EXIT_USAGE;
            if (r > 0)
                continue;
        }
        bool bad = false;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--verify")) {
            ro.verify = true;
            continue;
        } else if (!strcmp(a, "--verify-dest")) {
            ro.verify_dest = true;
            continue;
        } else if (!strcmp(a, "--prefault")) {
            ro.prefault = true;
            continue;
        } else if (!strcmp(a, "--monitor")) {
            ro.monitor = true;
            continue;
        } else if (!v) {
            fprintf(stderr, "minivm: unknown option '%s' or missing value (see --help)\n", a);
            return MINIVM_EXIT_USAGE;
        } else if (!strcmp(a, "--mem")) {
            bad = vmig_parse_size(v, &ro.mem) || ro.mem < (32ull << 20) || ro.mem > (8ull << 30) ||
                  ro.mem % MINIVM_PAGE;
            ro.mem_set = true;
        } else if (!strcmp(a, "--vcpus")) {
            uint64_t n;
            bad = parse_u64(v, &n) || n < 1 || n > MINIVM_MAX_VCPUS;
            ro.vcpus = (unsigned)n;
        } else if (!strcmp(a, "--dirty-rate")) {
            bad = parse_rate(v, &ro.rate);
        } else if (!strcmp(a, "--check-rate")) {
            bad = parse_rate(v, &ro.check_rate);
        } else if (!strcmp(a, "--hot-set")) {
            bad = vmig_parse_size(v, &ro.hot_set);
        } else if (!strcmp(a, "--hot-share")) {
            bad = parse_u64(v, &ro.hot_share_pct) || ro.hot_share_pct > 100;
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(v, &ro.seed);
        } else if (!strcmp(a, "--run-pages")) {
            bad = parse_u64(v, &ro.run_pages);
        } else if (!strcmp(a, "--dirty-log")) {
            uint64_t e = 0;
            ro.dirty_ring = !strncmp(v, "ring", 4);
            if (!strcmp(v, "bitmap") || !strcmp(v, "ring"))
                bad = false;
            else if (!strncmp(v, "ring:", 5))
                bad = parse_u64(v + 5, &e) || e < 64 || e > (1u << 24) || (e & (e - 1));
            else
                bad = true;
            ro.ring_entries = (uint32_t)e;
        } else if (!strcmp(a, "--ready-fd")) {
            uint64_t fd;
            bad = parse_u64(v, &fd) || fd > INT_MAX;
            ro.ready_fd = (int)fd;
        } else if (!strcmp(a, "--guest")) {
            ro.guest = v;
        } else if (!strcmp(a, "--migrate-to")) {
            ro.migrate_to = v;
        } else if (!strcmp(a, "--incoming")) {
            ro.incoming = v;
        } else if (!strcmp(a, "--colo-primary")) {
            ro.colo_primary = v;
        } else if (!strcmp(a, "--colo-secondary")) {
            ro.incoming = v; /* a destination that stays one */
            ro.colo_secondary = true;
        } else if (!strcmp(a, "--checkpoint")) {
            uint64_t ms;
            checkpoint_set = true;
            char num[32];
            vmig_error perr = {0};
            bad = parse_duration(v, &ms) || ms > UINT32_MAX;
            snprintf(num, sizeof(num), "%llu", (unsigned long long)ms);
            if (!bad && vmig_params_set(&ro.o.params, "checkpoint-period", num, &perr)) {
                fprintf(stderr, "minivm: --checkpoint '%s': %s\n", v, perr.msg);
                return MINIVM_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--checkpoint-log")) {
            ro.checkpoint_log = v;
        } else if (!strcmp(a, "--migrate-after")) {
            bad = parse_duration(v, &ro.migrate_after_ms);
            ro.migrate_after_set = true;
        } else if (!strcmp(a, "--device-state")) {
            bad = vmig_parse_size(v, &ro.device_state) || ro.device_state == 0 ||
                  ro.device_state % (1u << 20) || ro.device_state > (8ull << 30);
        } else if (!strcmp(a, "--device-rate")) {
            bad = parse_u64(v, &ro.device_rate) || ro.device_rate > 100000;
        } else if (!strcmp(a, "--run-for")) {
            bad = parse_duration(v, &ro.run_for_ms);
            ro.run_for_set = true;
        } else {
            fprintf(stderr, "minivm: unknown option '%s' (see --help)\n", a);
            return MINIVM_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "minivm: %s '%s': bad value (see --help)\n", a, v);
            return MINIVM_EXIT_USAGE;
        }
        i++;
    }
    if (ro.colo_primary && (ro.incoming || ro.migrate_to || ro.verify_dest)) {
        fprintf(stderr, "minivm: --colo-primary excludes --incoming, --colo-secondary, "
                        "--migrate-to and --verify-dest\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.colo_secondary && ro.migrate_to) {
        fprintf(stderr, "minivm: --colo-secondary excludes --migrate-to\n");
        return MINIVM_EXIT_USAGE;
    }
    if (checkpoint_set && !ro.colo_primary) {
        fprintf(stderr, "minivm: --checkpoint needs --colo-primary\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.checkpoint_log && !ro.colo_primary && !ro.colo_secondary) {
        fprintf(stderr, "minivm: --checkpoint-log needs --colo-primary or --colo-secondary\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.incoming && ro.verify_dest) {
        fprintf(stderr, "minivm: --incoming excludes --verify-dest\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.incoming && ro.dirty_ring) {
        fprintf(stderr, "minivm: --dirty-log ring is for a source (not with --incoming or "
                        "--colo-secondary)\n");
        return MINIVM_EXIT_USAGE;
    }
    if (!ro.incoming && ro.ready_fd >= 0) {
        fprintf(stderr, "minivm: --ready-fd needs --incoming\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.prefault && !(ro.incoming && ro.mem_set) && !ro.verify_dest) {
        fprintf(stderr, "minivm: --prefault needs --incoming with --mem, or --verify-dest\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.verify_dest && !ro.migrate_to) {
        fprintf(stderr, "minivm: --verify-dest needs --migrate-to\n");
        return MINIVM_EXIT_USAGE;
    }
    if (isatty(0) && !ro.o.quiet)
        ro.monitor = true;
    struct sigaction sa = {.sa_handler = on_int};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct minivm vm = {.kvm_fd = -1, .vm_fd = -1, .quiet = ro.o.quiet};
    for (unsigned i = 0; i < MINIVM_MAX_VCPUS; i++)
        vm.vcpu[i].fd = -1;
    int code;
    if (minivm_vm_open(&vm) ||
        (ro.dirty_ring && !ro.incoming && minivm_dirty_ring_enable(&vm, ro.ring_entries)))
        code = MINIVM_EXIT_VM;
    else
        code = ro.incoming ? cmd_dest(&ro, &vm) : cmd_source(&ro, &vm);
    minivm_vcpus_stop(&vm);
    minivm_vm_close(&vm);
    minivm_sdev_free(vm.sdev);
    free(vm.cpus_in);
    return code;
}

/* minivm probe: can this machine run minivm? What does its KVM offer? */
static int cmd_probe(void)
{
    struct minivm vm = {.kvm_fd = -1, .vm_fd = -1, .quiet = true};
    for (unsigned i = 0; i < MINIVM_MAX_VCPUS; i++)
        vm.vcpu[i].fd = -1;
    int code = MINIVM_EXIT_OK;
    if (minivm_vm_open(&vm) || minivm_vcpus_create(&vm, 1)) {
        code = MINIVM_EXIT_VM;
    } else {
        int ring = ioctl(vm.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
        int ring_acq = ioctl(vm.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
        int nested = 0;
        FILE *f = fopen("/proc/cpuinfo", "r");
        char line[4096];
        while (f && fgets(line, sizeof(line), f))
            if (!strncmp(line, "flags", 5)) {
                nested = strstr(line, " hypervisor") != NULL;
                break;
            }
        if (f)
            fclose(f);
        printf("kvm: usable (API %d), TSC %llu kHz%s\n", KVM_API_VERSION,
               (unsigned long long)vm.tsc_khz,
               nested ? ", inside a VM itself (nested: guest code runs slowly)" : "");
        printf("dirty log: bitmap%s; dirty ring %s",
               vm.manual_protect ? " with manual protect" : "",
               ring > 0 || ring_acq > 0 ? "available" : "not available");
        if (ring > 0 || ring_acq > 0)
            printf(" (up to %d entries per vCPU%s)",
                   (ring_acq > 0 ? ring_acq : ring) / (int)sizeof(struct kvm_dirty_gfn),
                   ring_acq > 0 ? ", acquire/release" : "");
        printf("\nmax vCPUs: %d\n", ioctl(vm.kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
    }
    minivm_vm_close(&vm);
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? MINIVM_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "run"))
        return cmd_run(argc, argv);
    if (!strcmp(argv[1], "probe"))
        return cmd_probe();
    fprintf(stderr, "minivm: unknown command '%s' (see --help)\n", argv[1]);
    return MINIVM_EXIT_USAGE;
}

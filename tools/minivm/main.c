/* minivm: boot the invariant guest, migrate it live with libvmig, or
 * receive one and check it. `minivm --help` documents the commands. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "minivm.h"

struct run_opts {
    cli_opts o;
    uint64_t mem;
    unsigned vcpus;
    uint64_t rate, hot_set, hot_share_pct, seed, run_pages;
    const char *migrate_to, *incoming, *guest;
    uint64_t migrate_after_ms, run_for_ms;
    bool run_for_set, verify, verify_dest;
};

static void usage(FILE *f)
{
    fprintf(f, "Usage:\n"
               "  minivm run [--mem SIZE] [--vcpus N] [--dirty-rate PAGES] [--hot-set SIZE]\n"
               "             [--hot-share PCT] [--seed N] [--run-pages N] [--guest FILE]\n"
               "             [--migrate-to URI [--migrate-after DUR] [--verify-dest]]\n"
               "             [--run-for DUR] [vmig options]\n"
               "  minivm run --incoming URI [--verify] [--run-for DUR] [vmig options]\n"
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
               "  --dirty-rate PAGES    pages per second the writer dirties, 0 = as fast as it\n"
               "                        can (default 25000; K/M suffixes are powers of 1024)\n"
               "  --hot-set SIZE        memory at the start of the workload that takes the\n"
               "                        hot share of the writes (default 64M)\n"
               "  --hot-share PCT       percent of writes that go to the hot set (default 90)\n"
               "  --seed N              seed of the initial content mix (default 1)\n"
               "  --run-pages N         the guest reports DONE after N writes (default 0: never)\n"
               "  --guest FILE          guest binary (default: <dir of minivm>/guest/guest.bin)\n"
               "  --migrate-to URI      migrate live to a destination (tcp:HOST:PORT, unix:PATH)\n"
               "  --migrate-after DUR   run this long first (default 3s); DUR is N, Nms, Ns, Nm\n"
               "  --verify-dest         start the destination too, as a child process on URI\n"
               "                        ('minivm run --incoming URI --verify'); its exit status\n"
               "                        is part of this one's\n"
               "  --run-for DUR         without --migrate-to: run this long (default 10s); after\n"
               "                        a failed migration: run until DUR from the start\n"
               "                        (default: migrate-after + 2s)\n"
               "  After a successful migration the source VM stays stopped and minivm exits.\n\n"
               "Destination (--incoming URI):\n"
               "  creates the RAM slots the source announces, receives, loads the vCPU state,\n"
               "  then resumes the guest for --run-for (default 2s) and checks that its counter\n"
               "  went on and that it reported no failure.\n"
               "  --verify              before resuming, check every workload page against the\n"
               "                        generation table at host speed (\"verified N pages\")\n\n"
               "  -q, --quiet           no guest text, no pass lines, no summary\n\n");
    cli_print_common_help(f);
    fprintf(f, "  5  the guest reported a failure (a bad page, a counter jump) or its\n"
               "     counter did not continue on the destination\n"
               "  6  KVM setup failed or a vCPU stopped (halt, shutdown, internal error)\n"
               "  Code 3 also means that --verify found a bad page.\n");
}

static uint64_t now_ms(void)
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

static volatile sig_atomic_t interrupted;
static void on_int(int sig)
{
    interrupted = sig;
}

/* Sleep up to `ms` while the guest runs; returns early when the guest or a
 * vCPU reports a failure, or on SIGINT/SIGTERM. */
static void run_guest(struct minivm *vm, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end && !interrupted &&
           !__atomic_load_n(&vm->guest_failed, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&vm->vm_error, __ATOMIC_SEQ_CST)) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void print_guest(struct minivm *vm, const char *when)
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

static int vm_verdict(struct minivm *vm)
{
    if (__atomic_load_n(&vm->guest_failed, __ATOMIC_SEQ_CST))
        return MINIVM_EXIT_GUEST;
    if (__atomic_load_n(&vm->vm_error, __ATOMIC_SEQ_CST))
        return MINIVM_EXIT_VM;
    return MINIVM_EXIT_OK;
}

/* ---- vmig hooks ---- */
static int hook_log_start(void *opaque)
{
    return minivm_dirty_log_set(opaque, true) ? VMIG_EIO : 0;
}
static void hook_log_stop(void *opaque)
{
    minivm_dirty_log_set(opaque, false);
}
static int hook_dirty_sync(void *opaque, uint32_t block, const char *name, uint64_t *bitmap,
                           uint64_t npages)
{
    (void)block;
    unsigned n = !strcmp(name, "ram-low") ? 0 : 1;
    return minivm_dirty_sync_slot(opaque, n, bitmap, npages) ? VMIG_EIO : 0;
}
static void hook_throttle(void *opaque, unsigned pct)
{
    minivm_vcpus_throttle(opaque, pct);
}
static int hook_stop(void *opaque)
{
    minivm_vcpus_pause(opaque);
    return 0;
}
static void hook_resume(void *opaque)
{
    minivm_vcpus_resume(opaque);
}
static int hook_save_state(void *opaque, void **buf, size_t *len)
{
    return minivm_state_save(opaque, buf, len) ? VMIG_EIO : 0;
}
static int hook_load_state(void *opaque, const void *buf, size_t len)
{
    char msg[256];
    if (minivm_state_load(opaque, buf, len, msg, sizeof(msg))) {
        fprintf(stderr, "minivm: device state refused: %s\n", msg);
        return VMIG_EPROTO;
    }
    return 0;
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
    if (minivm_slot_create(vm, n, length))
        return VMIG_ENOMEM;
    return vmig_ram_add(s, name, vm->slot[n].host, length, MINIVM_PAGE, VMIG_RAM_ZEROED, NULL);
}

static void event_cb(void *opaque, vmig_session *s, const vmig_event *ev)
{
    (void)s;
    const struct run_opts *ro = opaque;
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

static pid_t spawn_dest(const struct run_opts *ro)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    pid_t pid = fork();
    if (pid == 0) {
        char ch[16];
        snprintf(ch, sizeof(ch), "%u", ro->o.params.channels);
        execl(self, self, "run", "--incoming", ro->migrate_to, "--verify", "-c", ch,
              ro->o.quiet ? "-q" : "--no-progress", (char *)NULL);
        _exit(127);
    }
    return pid;
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
    c->tsc_khz = vm->tsc_khz;
    c->run_pages = ro->run_pages;
    c->nvcpus = ro->vcpus;
    for (unsigned i = 0; i < ro->vcpus; i++)
        c->role[i] = i == 0 ? MINIVM_ROLE_WRITER : i == 1 ? MINIVM_ROLE_CHECKER : MINIVM_ROLE_IDLE;
    uint64_t t = now_ms();
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
                ro->vcpus, (unsigned long long)vm->tsc_khz,
                vm->manual_protect ? "manual-protect" : "plain",
                (unsigned long long)(now_ms() - t));
    pid_t child = -1;
    if (ro->migrate_to && ro->verify_dest && (child = spawn_dest(ro)) < 0) {
        fprintf(stderr, "minivm: cannot start the destination\n");
        return MINIVM_EXIT_VM;
    }
    uint64_t start = now_ms();
    if (minivm_vcpus_start(vm))
        return MINIVM_EXIT_VM;
    int code = MINIVM_EXIT_OK;
    if (!ro->migrate_to) {
        /* MINIVM_THROTTLE=PCT: run throttled, to measure the throttle itself. */
        const char *th = getenv("MINIVM_THROTTLE");
        if (th)
            minivm_vcpus_throttle(vm, (unsigned)atoi(th));
        run_guest(vm, ro->run_for_ms);
        minivm_vcpus_pause(vm);
        if (!ro->o.quiet)
            print_guest(vm, "after the run");
        minivm_vcpus_stop(vm);
        return vm_verdict(vm);
    }
    run_guest(vm, ro->migrate_after_ms);
    if ((code = vm_verdict(vm)) != MINIVM_EXIT_OK || interrupted) {
        minivm_vcpus_stop(vm);
        if (child > 0)
            kill(child, SIGTERM), waitpid(child, NULL, 0);
        return code ? code : MINIVM_EXIT_MIGRATE;
    }
    if (!ro->o.quiet)
        print_guest(vm, "before migration");

    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = vmig_session_create(&s, VMIG_ROLE_SOURCE, &ro->o.params, &err);
    if (!rc)
        rc = vmig_ram_add(s, "ram-low", vm->slot[0].host, vm->slot[0].size, MINIVM_PAGE, 0, &err);
    if (!rc && vm->slot[1].size)
        rc = vmig_ram_add(s, "ram-high", vm->slot[1].host, vm->slot[1].size, MINIVM_PAGE, 0, &err);
    vmig_vm_ops ops = {.log_start = hook_log_start,
                       .dirty_sync = hook_dirty_sync,
                       .log_stop = hook_log_stop,
                       .throttle = hook_throttle,
                       .stop = hook_stop,
                       .resume = hook_resume,
                       .save_state = hook_save_state};
    if (!rc)
        rc = vmig_set_vm_ops(s, &ops, vm);
    if (!rc)
        rc = vmig_set_event_cb(s, event_cb, ro);
    if (!rc)
        rc = cli_run(s, do_migrate, (void *)ro->migrate_to, &ro->o, "minivm", &err);
    vmig_stats st = {0};
    if (s)
        vmig_stats_get(s, &st);
    cli_print_summary("sender", rc, &err, &st, cli_process_cpu(), &ro->o, NULL);
    if (rc) {
        fprintf(stderr, "minivm: migration failed: %s; the guest runs on\n", err.msg);
        uint64_t until = ro->run_for_set ? start + ro->run_for_ms : now_ms() + 2000;
        if (now_ms() < until)
            run_guest(vm, until - now_ms());
        code = vm_verdict(vm);
        if (code == MINIVM_EXIT_OK)
            code = cli_exit_code(rc);
    } else {
        code = vm_verdict(vm);
    }
    minivm_vcpus_pause(vm);
    if (!ro->o.quiet)
        print_guest(vm, rc ? "at the end" : "at switchover");
    minivm_vcpus_stop(vm);
    vmig_session_free(s);
    if (child > 0) {
        int status = 0;
        if (rc)
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

static int cmd_dest(struct run_opts *ro, struct minivm *vm)
{
    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = vmig_session_create(&s, VMIG_ROLE_DEST, &ro->o.params, &err);
    vmig_vm_ops ops = {.load_state = hook_load_state};
    if (!rc)
        rc = vmig_set_vm_ops(s, &ops, vm);
    if (!rc)
        rc = vmig_incoming_set_block_cb(s, block_cb, vm);
    if (!rc)
        rc = vmig_incoming_listen(s, ro->incoming, &err);
    if (!rc && !ro->o.quiet) {
        char uri[256];
        if (vmig_incoming_uri(s, uri, sizeof(uri)) == 0)
            fprintf(stderr, "minivm: listening on %s\n", uri);
    }
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
        return cli_exit_code(rc);
    }
    if (!vm->slot[0].host || vm->nvcpus == 0) {
        fprintf(stderr, "minivm: the source sent no low RAM or no vCPU state\n");
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
    }
    struct minivm_config *c = minivm_config_page(vm);
    uint64_t before = c->counter, gap_before = c->max_gap_tsc;
    (void)gap_before;
    if (minivm_state_apply_tsc(vm)) {
        fprintf(stderr, "minivm: cannot restore the TSC\n");
        return MINIVM_EXIT_VM;
    }
    if (!ro->o.quiet)
        print_guest(vm, "as received");
    if (minivm_vcpus_start(vm))
        return MINIVM_EXIT_VM;
    run_guest(vm, ro->run_for_set ? ro->run_for_ms : 2000);
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
    if (code == MINIVM_EXIT_OK && !ro->o.quiet)
        fprintf(stderr, "minivm: guest ran on: counter %llu -> %llu\n", (unsigned long long)before,
                (unsigned long long)after);
    return code;
}

static int cmd_run(int argc, char **argv)
{
    struct run_opts ro = {.mem = 256ull << 20,
                          .vcpus = 2,
                          .rate = 25000,
                          .hot_set = 64ull << 20,
                          .hot_share_pct = 90,
                          .seed = 1,
                          .migrate_after_ms = 3000,
                          .run_for_ms = 10000};
    vmig_params_init(&ro.o.params);
    ro.o.progress = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        /* minivm's own options first: vmig has a parameter "verify" too. */
        static const char *const own[] = {"-h",
                                          "--help",
                                          "--verify",
                                          "--verify-dest",
                                          "--mem",
                                          "--vcpus",
                                          "--dirty-rate",
                                          "--hot-set",
                                          "--hot-share",
                                          "--seed",
                                          "--run-pages",
                                          "--guest",
                                          "--migrate-to",
                                          "--incoming",
                                          "--migrate-after",
                                          "--run-for",
                                          NULL};
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
        } else if (!v) {
            fprintf(stderr, "minivm: unknown option '%s' or missing value (see --help)\n", a);
            return MINIVM_EXIT_USAGE;
        } else if (!strcmp(a, "--mem")) {
            bad = vmig_parse_size(v, &ro.mem) || ro.mem < (32ull << 20) || ro.mem > (8ull << 30) ||
                  ro.mem % MINIVM_PAGE;
        } else if (!strcmp(a, "--vcpus")) {
            uint64_t n;
            bad = parse_u64(v, &n) || n < 1 || n > MINIVM_MAX_VCPUS;
            ro.vcpus = (unsigned)n;
        } else if (!strcmp(a, "--dirty-rate")) {
            bad = vmig_parse_size(v, &ro.rate);
        } else if (!strcmp(a, "--hot-set")) {
            bad = vmig_parse_size(v, &ro.hot_set);
        } else if (!strcmp(a, "--hot-share")) {
            bad = parse_u64(v, &ro.hot_share_pct) || ro.hot_share_pct > 100;
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(v, &ro.seed);
        } else if (!strcmp(a, "--run-pages")) {
            bad = parse_u64(v, &ro.run_pages);
        } else if (!strcmp(a, "--guest")) {
            ro.guest = v;
        } else if (!strcmp(a, "--migrate-to")) {
            ro.migrate_to = v;
        } else if (!strcmp(a, "--incoming")) {
            ro.incoming = v;
        } else if (!strcmp(a, "--migrate-after")) {
            bad = parse_duration(v, &ro.migrate_after_ms);
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
    if (ro.incoming && (ro.migrate_to || ro.verify_dest)) {
        fprintf(stderr, "minivm: --incoming excludes --migrate-to and --verify-dest\n");
        return MINIVM_EXIT_USAGE;
    }
    if (ro.verify_dest && !ro.migrate_to) {
        fprintf(stderr, "minivm: --verify-dest needs --migrate-to\n");
        return MINIVM_EXIT_USAGE;
    }
    struct sigaction sa = {.sa_handler = on_int};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct minivm vm = {.kvm_fd = -1, .vm_fd = -1, .quiet = ro.o.quiet};
    for (unsigned i = 0; i < MINIVM_MAX_VCPUS; i++)
        vm.vcpu[i].fd = -1;
    int code;
    if (minivm_vm_open(&vm))
        code = MINIVM_EXIT_VM;
    else
        code = ro.incoming ? cmd_dest(&ro, &vm) : cmd_source(&ro, &vm);
    minivm_vcpus_stop(&vm);
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
    fprintf(stderr, "minivm: unknown command '%s' (see --help)\n", argv[1]);
    return MINIVM_EXIT_USAGE;
}

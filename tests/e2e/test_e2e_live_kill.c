/*
 * Processes killed at random points of a live migration (SIGKILL: no
 * goodbye on the wire). The other side runs in this process and must end
 * cleanly: a source resumes its VM with the memory intact, a destination
 * discards and reports, leaves no thread behind and can receive again.
 *
 * The killed side is this program run again (/proc/self/exe) in a role:
 *   test_e2e_live_kill dest URI SIZE FD    receive, write "ready" on FD first
 *   test_e2e_live_kill src URI SIZE SEED   a live source with writers
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "../testutil.h"
#include "../tu_migrate.h"
#include "live.h"
#include "../tu_vm.h"

#define MiB    (1ull << 20)
#define TRIALS 9

extern char **environ;

/* ---- the roles of a child ---- */

static int child_dest(const char *uri, uint64_t size, int fd)
{
    return tu_child_dest(uri, size, NULL, fd);
}

/* seed % 3 == 0: the source kills itself when it stops its VM (switchover). */
static int die_at_stop(void *o)
{
    (void)o;
    raise(SIGKILL);
    return 0;
}

static int child_src(const char *uri, uint64_t size, uint64_t seed)
{
    tu_vm vm;
    tu_vm_init(&vm, size, 40000000, size / 2, 2, seed);
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    p.max_bandwidth = 20 * MiB;
    p.compression = VMIG_CODEC_NONE; /* the timing assumes raw pages on a 20 MiB/s link */
    vmig_session *s;
    vmig_error e = {0};
    if (vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e) ||
        vmig_ram_add(s, "ram", vm.mem, size, 4096, 0, &e) ||
        vmig_set_vm_ops(s, &tu_vm_src_ops, &vm)) {
        fprintf(stderr, "child src: %s\n", e.msg);
        return 1;
    }
    if (seed % 3 == 0) {
        vmig_vm_ops ops = tu_vm_src_ops;
        ops.stop = die_at_stop;
        vmig_set_vm_ops(s, &ops, &vm);
    }
    int rc = vmig_migrate(s, uri, &e);
    vmig_session_free(s);
    tu_vm_free(&vm);
    return rc ? 1 : 0;
}

/* ---- the parent ---- */

static char dir[] = "/tmp/vmig-kill-XXXXXX";

static pid_t spawn(char *const argv[])
{
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ);
    REQUIRE(rc == 0, "posix_spawn: %s", strerror(rc));
    return pid;
}

typedef struct killer {
    pid_t pid;
    uint64_t delay_us;
    int sig; /* 0: SIGKILL */
} killer;

static void *kill_main(void *arg)
{
    killer *k = arg;
    usleep((useconds_t)k->delay_us);
    kill(k->pid, k->sig ? k->sig : SIGKILL);
    return NULL;
}

/* Every third trial kills the receiver at the switchover event. */
static void kill_at_switchover(void *o, vmig_session *s, const vmig_event *ev)
{
    (void)s;
    if (ev->type == VMIG_EVENT_SWITCHOVER)
        kill(*(pid_t *)o, SIGKILL);
}

static void test_receiver_killed(uint64_t *rng)
{
    uint64_t size = 16 * MiB;
    int survived = 0, completed = 0;
    for (int t = 0; t < TRIALS; t++) {
        char uri[128], ssize[32], sfd[16];
        snprintf(uri, sizeof(uri), "unix:%s/dest-%d.sock", dir, t);
        snprintf(ssize, sizeof(ssize), "%llu", (unsigned long long)size);
        int pfd[2];
        REQUIRE(pipe(pfd) == 0, "pipe");
        snprintf(sfd, sizeof(sfd), "%d", pfd[1]);
        char *argv[] = {"test_e2e_live_kill", "dest", uri, ssize, sfd, NULL};
        pid_t pid = spawn(argv);
        close(pfd[1]);
        char buf[8] = {0};
        REQUIRE(read(pfd[0], buf, 6) == 6, "the destination child did not start");
        close(pfd[0]);

        tu_vm vm;
        tu_vm_init(&vm, size, 40000000, size / 2, 2, 100 + (uint64_t)t);
        vmig_params p;
        vmig_params_init(&p);
        p.dirty_track = VMIG_DIRTY_WP;
        p.max_bandwidth = 20 * MiB;
        p.compression = VMIG_CODEC_NONE; /* the timing assumes raw pages on a 20 MiB/s link */
        p.connect_timeout_ms = 3000;
        vmig_session *s;
        vmig_error e = {0};
        REQUIRE(vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e) == 0, "%s", e.msg);
        REQUIRE(vmig_ram_add(s, "ram", vm.mem, size, 4096, 0, &e) == 0, "%s", e.msg);
        vmig_set_vm_ops(s, &tu_vm_src_ops, &vm);
        /* the migration takes about 1.2 s: kill anywhere in 0..1.5 s */
        killer k = {.pid = pid, .delay_us = tu_rand(rng) % 1500000};
        bool at_switch = t % 3 == 2;
        if (at_switch) {
            vmig_set_event_cb(s, kill_at_switchover, &pid);
            k.delay_us = 20000000; /* a backstop only */
        }
        pthread_t tk;
        bool stopped = t == 0; /* the first receiver is stopped (SIGSTOP), not killed */
        if (stopped)
            k.sig = SIGSTOP;
        REQUIRE(pthread_create(&tk, NULL, kill_main, &k) == 0, "thread");
        uint64_t t0 = tu_now_ns();
        int rc = vmig_migrate(s, uri, &e);
        double secs = (double)(tu_now_ns() - t0) / 1e9;
        if (at_switch) {
            CHECK(rc != 0 && vm.stops == 1 && vm.resumes == 1,
                  "killed at switchover: rc %d, %d stops, %d resumes", rc, vm.stops, vm.resumes);
            pthread_cancel(tk);
        }
        pthread_join(tk, NULL);
        if (stopped) {
            CHECK(rc == VMIG_ETIMEDOUT || rc == 0, "stopped receiver: %d %s", rc, e.msg);
            kill(pid, SIGKILL);
        }
        int status;
        waitpid(pid, &status, 0);
        char msg[512];
        if (rc == 0) {
            /* the kill came after the commit: a completed migration */
            completed++;
            CHECK(vm.stops == 1 && vm.resumes == 0, "completed: %d stops %d resumes", vm.stops,
                  vm.resumes);
        } else {
            survived++;
            CHECK(vm.resumes == vm.stops, "trial %d: %d stops, %d resumes", t, vm.stops,
                  vm.resumes);
            uint64_t w0 = tu_vm_writes(&vm);
            usleep(30000);
            CHECK(tu_vm_writes(&vm) > w0, "trial %d: the VM does not run after the failure", t);
            CHECK(tu_vm_intact(&vm, msg, sizeof(msg)), "trial %d: source memory: %s", t, msg);
            CHECK(secs < 10, "trial %d: the source took %.1f s to notice", t, secs);
            CHECK(vm.last_throttle == 0, "trial %d: left throttled", t);
        }
        fprintf(stderr, "  receiver %s %s %.3f s: source %s after %.3f s (%s)\n",
                stopped ? "stopped" : "killed", at_switch ? "at switchover, backstop" : "after",
                (double)k.delay_us / 1e6, rc ? "failed" : "completed", secs,
                rc ? e.msg : "the kill came after the commit");
        vmig_session_free(s);
        tu_vm_free(&vm);
    }
    CHECK(survived >= TRIALS / 2, "only %d of %d trials killed the receiver in time", survived,
          TRIALS);
    (void)completed;
}

static void test_sender_killed(uint64_t *rng)
{
    uint64_t size = 16 * MiB;
    uint8_t *mem = tu_map(size);
    vmig_session *d;
    vmig_error e = {0};
    tu_vm dvm = {0};
    vmig_params p;
    vmig_params_init(&p);
    p.connect_timeout_ms = 3000;
    REQUIRE(vmig_session_create(&d, VMIG_ROLE_DEST, &p, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_ram_add(d, "ram", mem, size, 4096, VMIG_RAM_ZEROED, &e) == 0, "%s", e.msg);
    vmig_set_vm_ops(d, &tu_vm_dst_ops, &dvm);
    char uri[128], ssize[32], sseed[32];
    snprintf(uri, sizeof(uri), "unix:%s/src.sock", dir);
    REQUIRE(vmig_incoming_listen(d, uri, &e) == 0, "%s", e.msg);
    snprintf(ssize, sizeof(ssize), "%llu", (unsigned long long)size);
    int threads0 = tu_count_threads();
    int failed = 0;
    for (int t = 0; t <= TRIALS; t++) {
        bool last = t == TRIALS; /* the last source is not killed: the session receives again */
        snprintf(sseed, sizeof(sseed), "%d", last ? 1000 : 200 + t);
        char *argv[] = {"test_e2e_live_kill", "src", uri, ssize, sseed, NULL};
        pid_t pid = spawn(argv);
        /* seeds 201..: every third source dies at its switchover by itself */
        killer k = {.pid = pid, .delay_us = 100000 + tu_rand(rng) % 1400000};
        pthread_t tk;
        if (!last)
            REQUIRE(pthread_create(&tk, NULL, kill_main, &k) == 0, "thread");
        tu_side b = {.s = d};
        uint64_t t0 = tu_now_ns();
        pthread_t td;
        REQUIRE(pthread_create(&td, NULL, tu_run_dst, &b) == 0, "thread");
        if (!last)
            pthread_join(tk, NULL);
        int status;
        waitpid(pid, &status, 0);
        /* A source killed before it even connected leaves a destination
         * that listens, as it should: its owner cancels it. */
        bool early = false;
        for (int i = 0; i < 3000 && !__atomic_load_n(&b.done, __ATOMIC_ACQUIRE); i++)
            usleep(1000);
        if (!__atomic_load_n(&b.done, __ATOMIC_ACQUIRE)) {
            early = true;
            vmig_cancel(d);
        }
        pthread_join(td, NULL);
        double secs = (double)(tu_now_ns() - t0) / 1e9;
        if (early && !last) {
            fprintf(stderr, "  sender killed after %.3f s, before it connected: canceled\n",
                    (double)k.delay_us / 1e6);
            CHECK(b.rc == VMIG_ECANCELED, "trial %d: %d %s", t, b.rc, b.err.msg);
            continue;
        }
        if (last) {
            CHECK(b.rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "after the kills, a migration to the same session: %d %s", b.rc, b.err.msg);
        } else if (b.rc) {
            failed++;
            CHECK(secs < 12, "trial %d: the destination took %.1f s to give up", t, secs);
            CHECK(b.err.msg[0], "trial %d: no reason given", t);
        }
        vmig_stats st;
        vmig_stats_get(d, &st);
        CHECK(st.state == (b.rc ? VMIG_STATE_FAILED : VMIG_STATE_COMPLETED), "state %s",
              vmig_state_name(st.state));
        int threads = tu_count_threads();
        /* a joined thread can linger in /proc/self/task for a moment */
        for (int i = 0; i < 100 && threads != threads0; i++) {
            usleep(10000);
            threads = tu_count_threads();
        }
        CHECK(threads == threads0, "trial %d: %d threads left, %d before", t, threads, threads0);
        fprintf(stderr, "  sender %s after %.3f s: destination %s after %.3f s: %s\n",
                last ? "not killed" : "killed", last ? 0.0 : (double)k.delay_us / 1e6,
                b.rc ? "failed" : "completed", secs, b.rc ? b.err.msg : "ok");
    }
    CHECK(failed >= TRIALS / 2, "only %d of %d trials killed the sender in time", failed, TRIALS);
    vmig_session_free(d);
    munmap(mem, size);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "dest"))
        return child_dest(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "src"))
        return child_src(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    vmig_error e = {0};
    if (vmig_dirty_track_probe(VMIG_DIRTY_WP, &e))
        SKIP("no built-in dirty tracker here: %s", e.msg);
    signal(SIGPIPE, SIG_IGN);
    REQUIRE(mkdtemp(dir), "mkdtemp");
    uint64_t rng = tu_now_ns();
    fprintf(stderr, "  seed %llu\n", (unsigned long long)rng);
    test_receiver_killed(&rng);
    test_sender_killed(&rng);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd))
        fprintf(stderr, "could not remove %s\n", dir);
    return tu_result("test_e2e_live_kill");
}

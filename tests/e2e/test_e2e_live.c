/*
 * Live pre-copy end to end, in one process: writer threads dirty the
 * source image while it migrates; at switchover they stop and the
 * destination's memory must equal the source's (stamps + original), the
 * device state must arrive, and every failure must leave the source VM
 * running with its memory intact.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <vmig/vmig.h>

#include "../testutil.h"
#include "../tu_migrate.h"
#include "live.h"
#include "ram/dirty.h"
#include "../tu_vm.h"

#define MiB (1ull << 20)

typedef struct pair {
    tu_vm vm;  /* the source VM */
    tu_vm dvm; /* destination: only its device state is used */
    uint8_t *dmem;
    vmig_session *src, *dst;
    tu_side a, b;
    pthread_t ta, tb;
    char uri[256];
    vmig_stats st;
    /* events */
    int passes_seen, switchovers, done_events;
    uint32_t cancel_at_pass; /* vmig_cancel() from the PASS event of this pass */
} pair;

static void on_event(void *o, vmig_session *s, const vmig_event *ev)
{
    pair *P = o;
    if (ev->type == VMIG_EVENT_PASS) {
        P->passes_seen++;
        CHECK(ev->bandwidth > 0, "PASS event without a bandwidth");
        if (P->cancel_at_pass && ev->pass == P->cancel_at_pass)
            vmig_cancel(s);
    } else if (ev->type == VMIG_EVENT_SWITCHOVER) {
        P->switchovers++;
    } else if (ev->type == VMIG_EVENT_DONE) {
        P->done_events++;
    }
}

static void pair_setup(pair *P, const vmig_params *sp, uint64_t len, uint64_t rate, uint64_t hot,
                       uint64_t seed)
{
    memset(P, 0, sizeof(*P));
    tu_vm_init(&P->vm, len, rate, hot, 2, seed);
    P->dmem = tu_map(len);
    vmig_error e = {0};
    REQUIRE(vmig_session_create(&P->dst, VMIG_ROLE_DEST, NULL, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_ram_add(P->dst, "ram", P->dmem, len, 4096, VMIG_RAM_ZEROED, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_set_vm_ops(P->dst, &tu_vm_dst_ops, &P->dvm) == 0, "dst ops");
    REQUIRE(vmig_incoming_listen(P->dst, "tcp:127.0.0.1:0", &e) == 0, "%s", e.msg);
    vmig_incoming_uri(P->dst, P->uri, sizeof(P->uri));
    REQUIRE(vmig_session_create(&P->src, VMIG_ROLE_SOURCE, sp, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_ram_add(P->src, "ram", P->vm.mem, len, 4096, 0, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_set_vm_ops(P->src, &tu_vm_src_ops, &P->vm) == 0, "src ops");
    REQUIRE(vmig_set_event_cb(P->src, on_event, P) == 0, "event cb");
    P->a = (tu_side){.s = P->src, .uri = P->uri};
    P->b = (tu_side){.s = P->dst};
}

static void pair_start(pair *P)
{
    REQUIRE(pthread_create(&P->tb, NULL, tu_run_dst, &P->b) == 0, "thread");
    REQUIRE(pthread_create(&P->ta, NULL, tu_run_src, &P->a) == 0, "thread");
}

static void pair_join(pair *P)
{
    pthread_join(P->ta, NULL);
    pthread_join(P->tb, NULL);
    vmig_stats_get(P->src, &P->st);
}

static void pair_free(pair *P)
{
    vmig_session_free(P->src);
    vmig_session_free(P->dst);
    munmap(P->dmem, P->vm.len);
    tu_vm_free(&P->vm);
}

/* After a success: the VM is stopped, the destination holds its image. */
static void check_success(pair *P, const char *what)
{
    char msg[512];
    CHECK(P->a.rc == 0, "%s: source: %s", what, P->a.err.msg);
    CHECK(P->b.rc == 0, "%s: destination: %s", what, P->b.err.msg);
    if (P->a.rc || P->b.rc)
        return;
    CHECK(P->vm.stops == 1 && P->vm.resumes == 0, "%s: %d stops, %d resumes", what, P->vm.stops,
          P->vm.resumes);
    struct vmig_live_stats ls;
    vmig_live_stats(P->vm.live, &ls);
    CHECK(ls.paused, "%s: the writers run after a successful migration", what);
    CHECK(vmig_live_check(P->vm.live, P->vm.orig, msg, sizeof(msg)) == 0, "%s: source: %s", what,
          msg);
    CHECK(vmig_live_check_copy(P->vm.live, P->vm.orig, P->dmem, msg, sizeof(msg)) == 0,
          "%s: destination differs from the source at switchover: %s", what, msg);
    CHECK(ls.writes > 0, "%s: the writers wrote nothing", what);
    CHECK(P->vm.saves == 1 && P->dvm.loads == 1 && P->dvm.state_len == P->vm.state_len &&
              !memcmp(P->dvm.state, P->vm.state, P->vm.state_len),
          "%s: device state: %d saves, %d loads, %zu bytes", what, P->vm.saves, P->dvm.loads,
          P->dvm.state_len);
    CHECK(P->st.state == VMIG_STATE_COMPLETED, "%s: state %s", what, vmig_state_name(P->st.state));
    CHECK(P->st.downtime_ns > 0 && P->st.downtime_ns < 5000000000ull, "%s: downtime %llu ns", what,
          (unsigned long long)P->st.downtime_ns);
    CHECK(P->switchovers == 1 && P->done_events == 1, "%s: %d switchover, %d done events", what,
          P->switchovers, P->done_events);
    fprintf(stderr,
            "  %s: %s, %u passes, %llu dirty pages, downtime %.1f ms, throttle max %u%%, "
            "%.1f MB/s, %llu writes\n",
            what, vmig_dirty_track_name(P->st.dirty_track), P->st.pass,
            (unsigned long long)P->st.dirty_pages, (double)P->st.downtime_ns / 1e6,
            P->st.throttle_max_pct, (double)P->st.bandwidth / 1e6, (unsigned long long)ls.writes);
}

/* After a failure: the VM runs on, unthrottled, with its memory intact. */
static void check_vm_survived(pair *P, const char *what, int want_rc)
{
    char msg[512];
    CHECK(P->a.rc == want_rc, "%s: source rc %d (%s), want %d", what, P->a.rc, P->a.err.msg,
          want_rc);
    CHECK(P->b.rc != 0, "%s: the destination succeeded", what);
    CHECK(P->vm.resumes == P->vm.stops, "%s: %d stops, %d resumes", what, P->vm.stops,
          P->vm.resumes);
    CHECK(P->vm.last_throttle == 0, "%s: left throttled at %u%%", what, P->vm.last_throttle);
    uint64_t w0 = tu_vm_writes(&P->vm);
    usleep(50000);
    CHECK(tu_vm_writes(&P->vm) > w0, "%s: the writers do not run after the failure", what);
    CHECK(tu_vm_intact(&P->vm, msg, sizeof(msg)), "%s: source memory: %s", what, msg);
    CHECK(P->st.throttle_pct == 0, "%s: stats say throttle %u%%", what, P->st.throttle_pct);
    CHECK(P->done_events == 1, "%s: %d done events", what, P->done_events);
}

static void test_converge(uint32_t mode)
{
    vmig_error e = {0};
    if (mode != VMIG_DIRTY_WP && vmig_dirty_track_probe(mode, &e)) {
        fprintf(stderr, "  %s: not here (%s)\n", vmig_dirty_track_name(mode), e.msg);
        return;
    }
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = mode;
    p.max_bandwidth = 100 * MiB;
    pair P;
    pair_setup(&P, &p, 64 * MiB, 20000000, 8 * MiB, 1 + mode);
    pair_start(&P);
    pair_join(&P);
    check_success(&P, vmig_dirty_track_name(mode));
    CHECK(P.st.pass >= 2 && P.passes_seen >= 1, "%u passes", P.st.pass);
    CHECK(P.st.throttle_max_pct == 0, "throttled %u%% at a low dirty rate", P.st.throttle_max_pct);
    CHECK(P.st.dirty_pages > 0 && P.st.sync_ns > 0, "dirty %llu sync %llu",
          (unsigned long long)P.st.dirty_pages, (unsigned long long)P.st.sync_ns);
    uint32_t want = mode == VMIG_DIRTY_WP ? P.st.dirty_track : mode;
    CHECK(P.st.dirty_track == want && (want == VMIG_DIRTY_WP_ASYNC || want == VMIG_DIRTY_WP_SYNC),
          "tracker %s", vmig_dirty_track_name(P.st.dirty_track));
    pair_free(&P);
}

static void test_throttle(void)
{
    /* 80 MB/s of writes against a 20 MiB/s link: only throttling converges. */
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    p.max_bandwidth = 20 * MiB;
    pair P;
    pair_setup(&P, &p, 32 * MiB, 80000000, 16 * MiB, 11);
    pair_start(&P);
    pair_join(&P);
    check_success(&P, "throttled");
    CHECK(P.st.throttle_max_pct > 0 && P.vm.max_throttle == P.st.throttle_max_pct,
          "throttle: stats %u%%, hook saw %u%%", P.st.throttle_max_pct, P.vm.max_throttle);
    pair_free(&P);
}

static void test_time_limit(void)
{
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    p.max_bandwidth = 10 * MiB;
    p.compression = VMIG_CODEC_NONE; /* the writers' pages compress: auto would converge */
    p.throttle = VMIG_THROTTLE_OFF;
    p.stall_passes = 1000;
    p.max_time_ms = 1500;
    pair P;
    pair_setup(&P, &p, 16 * MiB, 100000000, 16 * MiB, 12);
    pair_start(&P);
    pair_join(&P);
    check_vm_survived(&P, "time limit", VMIG_ETIMEDOUT);
    CHECK(strstr(P.a.err.msg, "did not converge") && strstr(P.a.err.msg, "max-time 1500 ms"),
          "message: %s", P.a.err.msg);
    CHECK(P.vm.stops == 0, "stopped %d times", P.vm.stops);
    CHECK(P.st.state == VMIG_STATE_FAILED, "state %s", vmig_state_name(P.st.state));
    fprintf(stderr, "  time limit: %s\n", P.a.err.msg);
    pair_free(&P);
}

typedef struct canceller {
    pair *P;
    uint32_t pass;    /* cancel once stats say this pass ... */
    uint64_t ram_min; /* ... and this much RAM was covered */
} canceller;

static void *cancel_main(void *arg)
{
    canceller *c = arg;
    for (int i = 0; i < 20000; i++) {
        vmig_stats st;
        vmig_stats_get(c->P->src, &st);
        if (st.state == VMIG_STATE_ACTIVE && st.pass >= c->pass && st.ram_bytes >= c->ram_min) {
            vmig_cancel(c->P->src);
            return NULL;
        }
        if (__atomic_load_n(&c->P->a.done, __ATOMIC_ACQUIRE))
            return NULL;
        usleep(1000);
    }
    return NULL;
}

static void test_cancel(const char *what, uint32_t pass, uint64_t ram_min, uint32_t at_event,
                        bool at_stop)
{
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    p.max_bandwidth = 10 * MiB;
    p.compression = VMIG_CODEC_NONE; /* passes must last: the writers' pages compress */
    p.throttle = VMIG_THROTTLE_OFF;
    p.stall_passes = 1000;
    if (at_stop)
        p.downtime_limit_ms = 3000;
    pair P;
    pair_setup(&P, &p, 32 * MiB, 50000000, 16 * MiB, 20 + pass);
    P.cancel_at_pass = at_event;
    if (at_stop)
        P.vm.cancel_on_stop = P.src;
    canceller c = {.P = &P, .pass = pass, .ram_min = ram_min};
    pthread_t tc;
    bool poll = !at_event && !at_stop;
    pair_start(&P);
    if (poll)
        REQUIRE(pthread_create(&tc, NULL, cancel_main, &c) == 0, "thread");
    pair_join(&P);
    if (poll)
        pthread_join(tc, NULL);
    check_vm_survived(&P, what, VMIG_ECANCELED);
    CHECK(P.st.state == VMIG_STATE_CANCELED, "%s: state %s", what, vmig_state_name(P.st.state));
    if (at_stop)
        CHECK(P.vm.stops == 1 && P.vm.resumes == 1, "%s: %d stops %d resumes", what, P.vm.stops,
              P.vm.resumes);
    else
        CHECK(P.vm.stops == 0, "%s: stopped", what);
    CHECK(P.st.pass >= pass, "%s: canceled in pass %u", what, P.st.pass);
    fprintf(stderr, "  %s: canceled in pass %u; destination: %s\n", what, P.st.pass, P.b.err.msg);
    /* The same sessions migrate again, to completion (low dirty rate now). */
    vmig_live_throttle(P.vm.live, 90);
    P.vm.cancel_on_stop = NULL;
    P.cancel_at_pass = 0;
    P.done_events = P.switchovers = 0;
    P.vm.stops = P.vm.resumes = P.vm.saves = P.dvm.loads = 0;
    P.a = (tu_side){.s = P.src, .uri = P.uri};
    P.b = (tu_side){.s = P.dst};
    pair_start(&P);
    pair_join(&P);
    check_success(&P, "migration after the cancel");
    pair_free(&P);
}

static void test_stop_fails(void)
{
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    pair P;
    pair_setup(&P, &p, 8 * MiB, 1000000, 1 * MiB, 30);
    P.vm.fail_stop = VMIG_EIO;
    pair_start(&P);
    pair_join(&P);
    check_vm_survived(&P, "stop fails", VMIG_EIO);
    CHECK(strstr(P.a.err.msg, "stop hook failed"), "message: %s", P.a.err.msg);
    pair_free(&P);
}

static void test_two_at_once(void)
{
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    p.max_bandwidth = 50 * MiB;
    p.channels = 2;
    pair P[2];
    for (int i = 0; i < 2; i++)
        pair_setup(&P[i], &p, 24 * MiB, 10000000, 4 * MiB, 40 + (uint64_t)i);
    for (int i = 0; i < 2; i++)
        pair_start(&P[i]);
    for (int i = 0; i < 2; i++) {
        pair_join(&P[i]);
        check_success(&P[i], i ? "second of two" : "first of two");
    }
    for (int i = 0; i < 2; i++)
        pair_free(&P[i]);
}

/* dirty-track callback: a "VMM" that keeps its own dirty log (here the
 * built-in tracker, driven through the hooks as a KVM VMM drives its log). */
typedef struct cb_vmm {
    tu_vm *vm;
    vmig_tracker *t;
    int starts, syncs, stops;
} cb_vmm;

static cb_vmm the_vmm;

static int cb_log_start(void *o)
{
    (void)o;
    the_vmm.starts++;
    return vmig_tracker_start(the_vmm.t, NULL);
}

static int cb_dirty_sync(void *o, uint32_t block, const char *name, uint64_t *bitmap,
                         uint64_t npages)
{
    (void)o;
    the_vmm.syncs++;
    if (block != 0 || strcmp(name, "ram") || npages != the_vmm.vm->len / 4096)
        return VMIG_EINVAL;
    return vmig_tracker_sync(the_vmm.t, 0, bitmap, NULL, NULL);
}

static void cb_log_stop(void *o)
{
    (void)o;
    the_vmm.stops++;
    vmig_tracker_stop(the_vmm.t);
}

static void test_callback(void)
{
    vmig_params p;
    vmig_params_init(&p); /* dirty-track auto: the hook is set, so callback */
    p.max_bandwidth = 100 * MiB;
    pair P;
    pair_setup(&P, &p, 32 * MiB, 20000000, 8 * MiB, 50);
    the_vmm = (cb_vmm){.vm = &P.vm};
    REQUIRE(vmig_tracker_create(&the_vmm.t, VMIG_TRACKER_AUTO, NULL) == 0, "tracker");
    REQUIRE(vmig_tracker_add(the_vmm.t, P.vm.mem, P.vm.len, 4096, NULL) == 0, "tracker add");
    vmig_vm_ops ops = tu_vm_src_ops;
    ops.log_start = cb_log_start;
    ops.dirty_sync = cb_dirty_sync;
    ops.log_stop = cb_log_stop;
    vmig_set_vm_ops(P.src, &ops, &P.vm);
    pair_start(&P);
    pair_join(&P);
    check_success(&P, "callback");
    CHECK(P.st.dirty_track == VMIG_DIRTY_CALLBACK, "mode %s",
          vmig_dirty_track_name(P.st.dirty_track));
    /* One sync per pass, plus at most one rate probe in each pass but the
     * last (a pass that lasts over 200 ms: slow builds see them). */
    CHECK(the_vmm.starts == 1 && the_vmm.stops == 1 && the_vmm.syncs >= 2 &&
              (uint32_t)the_vmm.syncs >= P.st.pass && (uint32_t)the_vmm.syncs <= 2 * P.st.pass - 1,
          "hooks: %d starts, %d syncs, %d stops, %u passes", the_vmm.starts, the_vmm.syncs,
          the_vmm.stops, P.st.pass);
    vmig_tracker_free(the_vmm.t);
    pair_free(&P);
}

static void test_refusals(void)
{
    /* live tracking without a stop hook could lose the last writes */
    vmig_params p;
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_WP;
    pair P;
    pair_setup(&P, &p, 4 * MiB, 1000000, 1 * MiB, 60);
    vmig_set_vm_ops(P.src, NULL, NULL);
    pair_start(&P);
    pthread_join(P.ta, NULL);
    CHECK(P.a.rc == VMIG_EINVAL && strstr(P.a.err.msg, "stop hook"), "no stop: %d %s", P.a.rc,
          P.a.err.msg);
    /* A cancel reaches only a running call (one before the destination's
     * thread entered it is reset): cancel until it has returned. */
    while (!__atomic_load_n(&P.b.done, __ATOMIC_ACQUIRE)) {
        vmig_cancel(P.dst);
        usleep(10000);
    }
    pthread_join(P.tb, NULL);
    /* device state that the destination cannot take: refused before any page */
    vmig_set_vm_ops(P.src, &tu_vm_src_ops, &P.vm);
    vmig_set_vm_ops(P.dst, NULL, NULL);
    P.a = (tu_side){.s = P.src, .uri = P.uri};
    P.b = (tu_side){.s = P.dst};
    pair_start(&P);
    pair_join(&P);
    CHECK(P.a.rc == VMIG_EPEER && strstr(P.a.err.msg, "load_state"), "no load_state: %d %s", P.a.rc,
          P.a.err.msg);
    CHECK(P.b.rc == VMIG_ENOTSUP, "destination: %d %s", P.b.rc, P.b.err.msg);
    CHECK(P.st.wire_bytes == 0 && P.vm.stops == 0, "%llu bytes sent, %d stops",
          (unsigned long long)P.st.wire_bytes, P.vm.stops);
    /* a stopped image (dirty-track none) with a stop hook: stopped before pass 1 */
    vmig_set_vm_ops(P.dst, &tu_vm_dst_ops, &P.dvm);
    vmig_params_init(&p);
    p.dirty_track = VMIG_DIRTY_NONE;
    vmig_session_free(P.src);
    vmig_error e = {0};
    REQUIRE(vmig_session_create(&P.src, VMIG_ROLE_SOURCE, &p, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_ram_add(P.src, "ram", P.vm.mem, P.vm.len, 4096, 0, &e) == 0, "%s", e.msg);
    vmig_set_vm_ops(P.src, &tu_vm_src_ops, &P.vm);
    vmig_set_event_cb(P.src, on_event, &P);
    P.a = (tu_side){.s = P.src, .uri = P.uri};
    P.b = (tu_side){.s = P.dst};
    P.switchovers = 0;
    P.done_events = 0;
    pair_start(&P);
    pair_join(&P);
    P.switchovers = 1; /* no switchover event in a one-pass migration */
    check_success(&P, "stopped image");
    CHECK(P.st.pass == 1 && P.st.dirty_track == VMIG_DIRTY_NONE, "pass %u mode %u", P.st.pass,
          P.st.dirty_track);
    pair_free(&P);
}

/* Every codec while the writers change the pages being compressed (zlib
 * copies them first; the others must cope): the destination still equals
 * the source at switchover, and the packets really went compressed. */
static void test_compress(void)
{
    for (uint32_t c = 1; c <= VMIG_CODEC_COUNT; c++) {
        uint32_t codec = c == VMIG_CODEC_COUNT ? VMIG_COMPRESSION_AUTO : c;
        vmig_error e = {0};
        if (codec != VMIG_COMPRESSION_AUTO && vmig_codec_available(codec, &e)) {
            fprintf(stderr, "  %s: %s\n", vmig_codec_name(codec), e.msg);
            continue;
        }
        vmig_params p;
        vmig_params_init(&p);
        p.dirty_track = VMIG_DIRTY_WP;
        p.compression = codec;
        p.max_bandwidth = 40 * MiB; /* a slow link: auto compresses */
        pair P;
        pair_setup(&P, &p, 32 * MiB, 20000000, 4 * MiB, 40 + c);
        pair_start(&P);
        pair_join(&P);
        char what[64];
        snprintf(what, sizeof(what), "live, compression %s", vmig_codec_name(codec));
        check_success(&P, what);
        uint64_t compressed = 0;
        for (uint32_t k = 1; k < VMIG_CODEC_COUNT; k++)
            compressed += P.st.codec[k].packets;
        if (codec != VMIG_COMPRESSION_AUTO)
            CHECK(P.st.codec[codec].packets > 0 && compressed == P.st.codec[codec].packets,
                  "%s: %llu packets of the codec, %llu compressed in all", what,
                  (unsigned long long)P.st.codec[codec].packets, (unsigned long long)compressed);
        pair_free(&P);
    }
}

int main(void)
{
    vmig_error e = {0};
    if (vmig_dirty_track_probe(VMIG_DIRTY_WP, &e))
        SKIP("no built-in dirty tracker here: %s", e.msg);
    test_converge(VMIG_DIRTY_WP);
    test_converge(VMIG_DIRTY_WP_ASYNC);
    test_converge(VMIG_DIRTY_WP_SYNC);
    test_callback();
    test_throttle();
    test_time_limit();
    test_cancel("cancel in pass 1", 1, 2 * MiB, 0, false);
    test_cancel("cancel in pass 3", 3, 0, 0, false);
    test_cancel("cancel at the end of pass 2", 0, 0, 2, false);
    test_cancel("cancel in switchover", 0, 0, 0, true);
    test_stop_fails();
    test_two_at_once();
    test_refusals();
    test_compress();
    return tu_result("test_e2e_live");
}

/*
 * minivm run --colo-primary / --colo-secondary: the guest protected by
 * continuous checkpoints (vmig_colo_primary, vmig_colo_secondary).
 *
 * Primary: the guest runs here; vmig_colo_primary runs on a thread of its
 * own (it returns only when the protection ends) while this thread serves
 * the guest's run: --run-for, the monitor, signals. Each checkpoint's
 * pause goes through the usual stop hook, which also seals the console's
 * held lines (console.c); the acknowledgement (VMIG_EVENT_CHECKPOINT)
 * releases them. When the protection ends, for whatever reason, the guest
 * runs on here and the rest of its run is the plain source's (run_vm).
 *
 * Secondary: a destination that stays one. The vCPUs are not started and
 * the vCPU state of each checkpoint is only checked and kept
 * (vm->cpus_keep); on failover the last committed one is written into
 * KVM and the rest is the incoming path's (dest_resume: --verify, run,
 * the counter must go on, the guest must report nothing).
 *
 * Both print a line per checkpoint at most once a second (a summary of
 * the checkpoints since the last line), and with --checkpoint-log one
 * line per checkpoint into a file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "run.h"

/* A series of durations (or sizes). */
struct series {
    uint64_t n, sum, max, last;
};

static void series_add(struct series *s, uint64_t v)
{
    s->n++;
    s->sum += v;
    s->last = v;
    if (v > s->max)
        s->max = v;
}

static double mean_ms(const struct series *s)
{
    return s->n ? (double)s->sum / (double)s->n / 1e6 : 0.0;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double mib(double bytes)
{
    return bytes / 1048576.0;
}

/* Lines of figures at most this often (checkpoints may come every 100 ms). */
#define LINE_NS 1000000000ull

/* Run fn(arg) on a thread that SIGINT and SIGTERM never interrupt (they go
 * to this thread, which turns them into vmig_cancel()). */
static int start_worker(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static FILE *open_log(const char *path, const char *header)
{
    if (!path)
        return NULL;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "minivm: --checkpoint-log %s: %s\n", path, strerror(errno));
        return NULL;
    }
    fprintf(f, "%s\n", header);
    fflush(f);
    return f;
}

/* ------------------------------------------------------------------ */
/* primary                                                             */

struct colo_primary {
    struct run_opts *ro;
    struct minivm *vm;
    vmig_session *s;
    struct hook_ctx h;
    pthread_t thread;
    int done; /* atomic: vmig_colo_primary returned */
    int rc;
    vmig_error err;
    FILE *log;
    uint64_t t0; /* ns, the protection's start */
    /* Written on vmig's thread (the event callback); read there, and by
     * this thread after the join. */
    bool protected_;  /* checkpoint 0 acknowledged */
    uint64_t last_id; /* the last acknowledged */
    uint64_t c0_pause, c0_ack, c0_bytes, c0_at;
    uint64_t c0_writes; /* the guest's writes at checkpoint 0's ack (its real dirty rate) */
    struct series pause, ack, bytes;    /* checkpoints after 0 */
    struct series wpause, wack, wbytes; /* since the last line */
    uint64_t wstart;                    /* ns, the last line */
    int line_now;                       /* atomic: a requested checkpoint gets a line */
};

static void primary_line(struct colo_primary *cp, uint64_t id, uint64_t now)
{
    fprintf(stderr,
            "minivm: checkpoint %llu acknowledged, %llu in the last %.1f s: pause last %.1f, "
            "mean %.1f, max %.1f ms; ack mean %.1f, max %.1f ms; %.2f MiB each\n",
            (unsigned long long)id, (unsigned long long)cp->wpause.n,
            (double)(now - cp->wstart) / 1e9, ms(cp->wpause.last), mean_ms(&cp->wpause),
            ms(cp->wpause.max), mean_ms(&cp->wack), ms(cp->wack.max),
            cp->wbytes.n ? mib((double)cp->wbytes.sum / (double)cp->wbytes.n) : 0.0);
    cp->wpause = cp->wack = cp->wbytes = (struct series){0};
    cp->wstart = now;
}

static void primary_event(void *opaque, vmig_session *s, const vmig_event *ev)
{
    struct colo_primary *cp = opaque;
    const struct run_opts *ro = cp->ro;
    if (ev->type != VMIG_EVENT_CHECKPOINT) {
        run_event_cb((void *)ro, s, ev); /* the initial copy's passes, notices */
        return;
    }
    /* Output commit first: what the guest wrote before this checkpoint's
     * pause may leave the host now. */
    minivm_console_release(&cp->vm->console);
    uint64_t now = now_ns();
    if (cp->log) {
        fprintf(cp->log, "%llu %llu %llu %llu %.3f\n", (unsigned long long)ev->checkpoint,
                (unsigned long long)ev->pause_ns, (unsigned long long)ev->commit_ns,
                (unsigned long long)ev->ckpt_bytes, (double)(now - cp->t0) / 1e6);
        fflush(cp->log);
    }
    cp->last_id = ev->checkpoint;
    if (ev->checkpoint == 0) {
        cp->protected_ = true;
        cp->c0_pause = ev->pause_ns;
        cp->c0_ack = ev->commit_ns;
        cp->c0_bytes = ev->ckpt_bytes;
        cp->c0_at = now;
        cp->wstart = now;
        struct minivm_config *c = minivm_config_page(cp->vm);
        cp->c0_writes = c ? __atomic_load_n(&c->writes, __ATOMIC_RELAXED) : 0;
        if (!ro->o.quiet) {
            uint32_t period = ro->o.params.checkpoint_period_ms;
            char every[64];
            if (period)
                snprintf(every, sizeof(every), "a checkpoint every %u ms", period);
            else
                snprintf(every, sizeof(every), "checkpoints on demand only");
            fprintf(stderr,
                    "minivm: checkpoint 0 acknowledged after %.1f s: the secondary holds the "
                    "whole VM (%.0f MiB; paused %.1f ms, ack %.1f ms); protected, %s\n",
                    (double)(now - cp->t0) / 1e9, mib((double)ev->ckpt_bytes), ms(ev->pause_ns),
                    ms(ev->commit_ns), every);
        }
        return;
    }
    series_add(&cp->pause, ev->pause_ns);
    series_add(&cp->ack, ev->commit_ns);
    series_add(&cp->bytes, ev->ckpt_bytes);
    series_add(&cp->wpause, ev->pause_ns);
    series_add(&cp->wack, ev->commit_ns);
    series_add(&cp->wbytes, ev->ckpt_bytes);
    bool asked = __atomic_exchange_n(&cp->line_now, 0, __ATOMIC_ACQ_REL);
    if (!ro->o.quiet && (asked || now - cp->wstart >= LINE_NS))
        primary_line(cp, ev->checkpoint, now);
}

static void *primary_main(void *arg)
{
    struct colo_primary *cp = arg;
    cp->rc = vmig_colo_primary(cp->s, cp->ro->colo_primary, &cp->err);
    __atomic_store_n(&cp->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

void colo_monitor_info(struct colo_primary *cp)
{
    vmig_stats st;
    vmig_stats_get(cp->s, &st);
    uint64_t held, released, dropped;
    minivm_console_counts(&cp->vm->console, &held, &released, &dropped);
    if (st.state != VMIG_STATE_CHECKPOINTING) {
        fprintf(stderr,
                "minivm: protection: %s, checkpoint 0 (the initial copy) not acknowledged yet: "
                "pass %u, %.1f MiB left\n",
                vmig_state_name(st.state), st.pass, mib((double)st.remaining_bytes));
        return;
    }
    fprintf(stderr,
            "minivm: protection: %llu checkpoints acknowledged after checkpoint 0; last: pause "
            "%.1f ms, ack %.1f ms, %.2f MiB; pause mean %.1f, max %.1f ms; ack max %.1f ms; "
            "guest lines held %llu, released %llu\n",
            (unsigned long long)st.checkpoints, ms(st.ckpt_pause_ns), ms(st.ckpt_commit_ns),
            mib((double)st.ckpt_last_bytes),
            st.checkpoints ? ms(st.ckpt_pause_total_ns) / (double)st.checkpoints : 0.0,
            ms(st.ckpt_pause_max_ns), ms(st.ckpt_commit_max_ns), (unsigned long long)held,
            (unsigned long long)released);
}

void colo_monitor_checkpoint(struct colo_primary *cp)
{
    if (vmig_colo_checkpoint_request(cp->s)) {
        fprintf(stderr, "minivm: checkpoint: not now, checkpoint 0 (the initial copy) is not "
                        "acknowledged yet\n");
        return;
    }
    __atomic_store_n(&cp->line_now, 1, __ATOMIC_RELEASE);
    fprintf(stderr, "minivm: checkpoint requested\n");
}

static void primary_summary(struct colo_primary *cp, const vmig_stats *st)
{
    const struct run_opts *ro = cp->ro;
    uint64_t held, released, dropped;
    minivm_console_counts(&cp->vm->console, &held, &released, &dropped);
    uint64_t end = now_ns();
    double secs = cp->protected_ ? (double)(end - cp->c0_at) / 1e9 : 0.0;
    struct minivm_config *c = minivm_config_page(cp->vm);
    uint64_t writes =
        c && cp->protected_ ? __atomic_load_n(&c->writes, __ATOMIC_RELAXED) - cp->c0_writes : 0;
    if (ro->o.json) {
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "\"colo\":{\"protected\":%s,\"checkpoints\":%llu,\"initial_pause_ms\":%.3f,"
                 "\"initial_ack_ms\":%.3f,\"pause_ms_mean\":%.3f,\"pause_ms_max\":%.3f,"
                 "\"ack_ms_mean\":%.3f,\"ack_ms_max\":%.3f,\"bytes\":%llu,"
                 "\"protected_seconds\":%.3f,\"guest_writes_protected\":%llu,"
                 "\"guest_lines_released\":%llu,\"guest_lines_dropped\":%llu}",
                 cp->protected_ ? "true" : "false", (unsigned long long)cp->pause.n,
                 ms(cp->c0_pause), ms(cp->c0_ack), mean_ms(&cp->pause), ms(cp->pause.max),
                 mean_ms(&cp->ack), ms(cp->ack.max), (unsigned long long)cp->bytes.sum, secs,
                 (unsigned long long)writes, (unsigned long long)released,
                 (unsigned long long)dropped);
        cli_print_summary("sender", cp->rc, &cp->err, st, cli_process_cpu(), &ro->o, extra);
    }
    if (ro->o.quiet)
        return;
    if (!cp->protected_) {
        fprintf(stderr, "minivm: protection: never established (checkpoint 0 not acknowledged)\n");
        return;
    }
    fprintf(stderr,
            "minivm: protection: %llu checkpoints acknowledged in %.1f s after checkpoint 0 "
            "(%.0f MiB, paused %.1f ms, ack %.1f ms); the guest wrote %.0f pages/s meanwhile\n",
            (unsigned long long)cp->pause.n, secs, mib((double)cp->c0_bytes), ms(cp->c0_pause),
            ms(cp->c0_ack), secs > 0 ? (double)writes / secs : 0.0);
    if (cp->pause.n)
        fprintf(stderr,
                "minivm: checkpoints: pause mean %.2f ms, max %.2f ms; ack (resume to "
                "acknowledgement) mean %.2f ms, max %.2f ms; %.2f MiB each, %.1f MiB in all\n",
                mean_ms(&cp->pause), ms(cp->pause.max), mean_ms(&cp->ack), ms(cp->ack.max),
                mib((double)cp->bytes.sum / (double)cp->bytes.n), mib((double)cp->bytes.sum));
    fprintf(stderr, "minivm: dirty log: %u syncs, longest %.2f ms, %.1f ms in all\n",
            cp->h.st.syncs, ms(cp->h.st.sync_ns_max), ms(cp->h.st.sync_ns_total));
    fprintf(stderr,
            "minivm: guest output: %llu line(s) released after their checkpoint's "
            "acknowledgement%s\n",
            (unsigned long long)released,
            dropped ? ", some lost: the held text reached its limit" : "");
}

int colo_primary_run(struct run_opts *ro, struct minivm *vm, struct monitor *m)
{
    uint64_t start = now_ms();
    uint64_t run_ms = ro->run_for_set || !m->on ? ro->run_for_ms : UINT64_MAX;
    struct colo_primary *cp = calloc(1, sizeof(*cp));
    if (!cp)
        return MINIVM_EXIT_VM;
    cp->ro = ro;
    cp->vm = vm;
    cp->h.vm = vm;
    cp->h.seal_on_stop = &vm->console;
    cp->log = open_log(ro->checkpoint_log, "# checkpoint pause_ns ack_ns bytes t_ms");
    vmig_error err = {0};
    vmig_vm_ops ops;
    run_vm_ops(&ops);
    int rc = vmig_session_create(&cp->s, VMIG_ROLE_SOURCE, &ro->o.params, &err);
    if (!rc)
        rc = vmig_ram_add(cp->s, "ram-low", vm->slot[0].host, vm->slot[0].size, MINIVM_PAGE, 0,
                          &err);
    if (!rc && vm->slot[1].size)
        rc = vmig_ram_add(cp->s, "ram-high", vm->slot[1].host, vm->slot[1].size, MINIVM_PAGE, 0,
                          &err);
    if (!rc)
        rc = vmig_set_vm_ops(cp->s, &ops, &cp->h);
    if (!rc)
        rc = register_devices(cp->s, vm, &err);
    if (!rc)
        rc = vmig_set_event_cb(cp->s, primary_event, cp);
    if (rc) {
        fprintf(stderr, "minivm: cannot set up the protection: %s\n", err.msg);
        vmig_session_free(cp->s);
        if (cp->log)
            fclose(cp->log);
        free(cp);
        minivm_vcpus_stop(vm);
        return cli_exit_code(rc);
    }
    /* Held from the start: the text of the initial copy's time is
     * covered by checkpoint 0. */
    minivm_console_hold(&vm->console, true);
    cp->t0 = now_ns();
    if (!ro->o.quiet)
        fprintf(stderr,
                "minivm: protecting the guest with continuous checkpoints to %s; its output is "
                "held until a checkpoint that covers it is acknowledged\n",
                ro->colo_primary);
    if (start_worker(&cp->thread, primary_main, cp)) {
        fprintf(stderr, "minivm: cannot start a thread\n");
        minivm_console_hold(&vm->console, false);
        vmig_session_free(cp->s);
        if (cp->log)
            fclose(cp->log);
        free(cp);
        minivm_vcpus_stop(vm);
        return MINIVM_EXIT_VM;
    }
    m->colo = cp;
    /* Until the protection ends by itself (lost) or this side ends it. */
    enum run_end end = RUN_TIMEOUT;
    bool lost = false;
    for (;;) {
        if (__atomic_load_n(&cp->done, __ATOMIC_ACQUIRE)) {
            lost = true;
            break;
        }
        uint64_t t = now_ms() - start;
        if (run_ms != UINT64_MAX && t >= run_ms)
            break;
        uint64_t slice = run_ms == UINT64_MAX || run_ms - t > 50 ? 50 : run_ms - t;
        end = run_guest(vm, m, slice);
        if (end != RUN_TIMEOUT && end != RUN_MIGRATE) /* `migrate` was refused */
            break;
    }
    if (!lost)
        vmig_cancel(cp->s); /* the secondary is told not to take over */
    pthread_join(cp->thread, NULL);
    m->colo = NULL;
    minivm_console_hold(&vm->console, false);
    if (cp->log)
        fclose(cp->log);
    if (lost) {
        /* vmig's sentence says that the VM runs on here, unprotected. */
        fprintf(stderr, "minivm: protection ended: %s\n", cp->err.msg);
        if (!ro->o.quiet)
            print_guest(vm, "when the protection ended");
    } else if (cp->rc != VMIG_ECANCELED) {
        fprintf(stderr, "minivm: protection ended: %s\n", cp->err.msg);
    } else if (!ro->o.quiet) {
        const char *why = end == RUN_SIGNAL   ? "a signal"
                          : end == RUN_QUIT   ? "quit"
                          : end == RUN_FAILED ? "the guest or a vCPU failed"
                                              : "--run-for is over";
        fprintf(stderr,
                "minivm: protection ended here (%s); the secondary was told not to take over\n",
                why);
    }
    vmig_stats st = {0};
    vmig_stats_get(cp->s, &st);
    primary_summary(cp, &st);
    vmig_session_free(cp->s);
    bool established = cp->protected_;
    free(cp);
    if (lost) {
        /* Unprotected from here: the plain source's run, to the same end. */
        uint64_t t = now_ms() - start;
        uint64_t left = run_ms == UINT64_MAX ? UINT64_MAX : run_ms > t ? run_ms - t : 0;
        int code = run_vm(ro, vm, m, NULL, 0, left);
        return code == MINIVM_EXIT_OK && !established ? MINIVM_EXIT_MIGRATE : code;
    }
    minivm_vcpus_pause(vm);
    if (!ro->o.quiet)
        print_guest(vm, "at the end");
    minivm_vcpus_stop(vm);
    int code = vm_verdict(vm);
    if (code == MINIVM_EXIT_OK && end == RUN_SIGNAL)
        code = MINIVM_EXIT_MIGRATE;
    return code;
}

/* ------------------------------------------------------------------ */
/* secondary                                                           */

struct colo_secondary {
    struct run_opts *ro;
    struct minivm *vm;
    vmig_session *s;
    pthread_t thread;
    int done; /* atomic */
    int rc;
    vmig_error err;
    FILE *log;
    uint64_t t0;
    /* vmig's thread (events), then this one after the join. */
    uint64_t t_load; /* ns, the CKPT_LOAD event of the current checkpoint */
    bool have0;
    uint64_t last_id, c0_bytes, failover_at;
    struct series commit, flush, load, bytes;
    struct series wcommit, wbytes;
    uint64_t wstart;
};

static void secondary_event(void *opaque, vmig_session *s, const vmig_event *ev)
{
    struct colo_secondary *cs = opaque;
    const struct run_opts *ro = cs->ro;
    uint64_t now = now_ns();
    switch (ev->type) {
    case VMIG_EVENT_CKPT_FLUSH: /* its time is in the statistics */
        return;
    case VMIG_EVENT_CKPT_LOAD:
        cs->t_load = now;
        return;
    case VMIG_EVENT_FAILOVER:
        cs->failover_at = now;
        fprintf(stderr, "minivm: failover: %s\n",
                ev->message ? ev->message : "the primary is gone");
        return;
    case VMIG_EVENT_CHECKPOINT:
        break;
    default:
        run_event_cb((void *)ro, s, ev);
        return;
    }
    uint64_t flush = 0, load = 0;
    if (ev->checkpoint) {
        vmig_stats st;
        vmig_stats_get(s, &st);
        flush = st.ckpt_flush_ns;
        load = cs->t_load ? now - cs->t_load : 0; /* the device loads and the ACK */
    }
    if (cs->log) {
        fprintf(cs->log, "%llu %llu %llu %llu %llu %.3f\n", (unsigned long long)ev->checkpoint,
                (unsigned long long)ev->commit_ns, (unsigned long long)flush,
                (unsigned long long)load, (unsigned long long)ev->ckpt_bytes,
                (double)(now - cs->t0) / 1e6);
        fflush(cs->log);
    }
    cs->last_id = ev->checkpoint;
    cs->t_load = 0;
    if (ev->checkpoint == 0) {
        cs->have0 = true;
        cs->c0_bytes = ev->ckpt_bytes;
        cs->wstart = now;
        if (!ro->o.quiet)
            fprintf(stderr,
                    "minivm: checkpoint 0 committed after %.1f s: standby with the whole VM "
                    "(%.0f MiB); its vCPUs do not run here\n",
                    (double)(now - cs->t0) / 1e9, mib((double)ev->ckpt_bytes));
        return;
    }
    series_add(&cs->commit, ev->commit_ns);
    series_add(&cs->flush, flush);
    series_add(&cs->load, load);
    series_add(&cs->bytes, ev->ckpt_bytes);
    series_add(&cs->wcommit, ev->commit_ns);
    series_add(&cs->wbytes, ev->ckpt_bytes);
    if (!ro->o.quiet && now - cs->wstart >= LINE_NS) {
        fprintf(stderr,
                "minivm: checkpoint %llu committed, %llu in the last %.1f s: commit mean %.1f, "
                "max %.1f ms; %.2f MiB each\n",
                (unsigned long long)ev->checkpoint, (unsigned long long)cs->wcommit.n,
                (double)(now - cs->wstart) / 1e9, mean_ms(&cs->wcommit), ms(cs->wcommit.max),
                mib((double)cs->wbytes.sum / (double)cs->wbytes.n));
        cs->wcommit = cs->wbytes = (struct series){0};
        cs->wstart = now;
    }
}

static void *secondary_main(void *arg)
{
    struct colo_secondary *cs = arg;
    cs->rc = vmig_colo_secondary(cs->s, &cs->err);
    __atomic_store_n(&cs->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void secondary_summary(struct colo_secondary *cs, const vmig_stats *st)
{
    const struct run_opts *ro = cs->ro;
    if (ro->o.json) {
        char extra[1024];
        snprintf(extra, sizeof(extra),
                 "\"colo\":{\"standby\":%s,\"failover\":%s,\"checkpoints\":%llu,"
                 "\"last_checkpoint\":%llu,\"commit_ms_mean\":%.3f,\"commit_ms_max\":%.3f,"
                 "\"flush_ms_mean\":%.3f,\"load_ms_mean\":%.3f,\"bytes\":%llu,"
                 "\"flush_threads\":%u,\"discarded\":%u}",
                 cs->have0 ? "true" : "false", cs->rc == 0 ? "true" : "false",
                 (unsigned long long)cs->commit.n, (unsigned long long)cs->last_id,
                 mean_ms(&cs->commit), ms(cs->commit.max), mean_ms(&cs->flush), mean_ms(&cs->load),
                 (unsigned long long)cs->bytes.sum, st->flush_threads, st->ckpt_discarded);
        cli_print_summary("receiver", cs->rc, &cs->err, st, cli_process_cpu(), &ro->o, extra);
    }
    if (ro->o.quiet || !cs->have0)
        return;
    fprintf(stderr,
            "minivm: standby: %llu checkpoints committed after checkpoint 0 (%.0f MiB); the last "
            "is %llu\n",
            (unsigned long long)cs->commit.n, mib((double)cs->c0_bytes),
            (unsigned long long)cs->last_id);
    if (cs->commit.n)
        fprintf(stderr,
                "minivm: commits: mean %.2f ms, max %.2f ms (flush on %u thread(s) mean %.2f "
                "ms, device loads and ack mean %.2f ms); %.2f MiB each\n",
                mean_ms(&cs->commit), ms(cs->commit.max), st->flush_threads, mean_ms(&cs->flush),
                mean_ms(&cs->load), mib((double)cs->bytes.sum / (double)cs->bytes.n));
    if (cs->rc == 0)
        fprintf(stderr, "minivm: at the failover %s\n",
                st->ckpt_discarded ? "a checkpoint in flight was discarded"
                                   : "no checkpoint was in flight");
}

int colo_secondary_run(struct run_opts *ro, struct minivm *vm, vmig_session *s)
{
    struct colo_secondary *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        vmig_session_free(s);
        return MINIVM_EXIT_VM;
    }
    cs->ro = ro;
    cs->vm = vm;
    cs->s = s;
    cs->log = open_log(ro->checkpoint_log, "# checkpoint commit_ns flush_ns load_ns bytes t_ms");
    cs->t0 = now_ns();
    vm->cpus_keep = true; /* each checkpoint's vCPU state is kept, not applied */
    int rc = vmig_set_event_cb(s, secondary_event, cs);
    if (!rc && start_worker(&cs->thread, secondary_main, cs))
        rc = VMIG_ENOMEM;
    if (rc) {
        fprintf(stderr, "minivm: cannot start the standby\n");
        vmig_session_free(s);
        if (cs->log)
            fclose(cs->log);
        free(cs);
        return MINIVM_EXIT_VM;
    }
    bool canceled = false;
    while (!__atomic_load_n(&cs->done, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (run_interrupted() && !canceled) {
            vmig_cancel(s);
            canceled = true;
        }
    }
    pthread_join(cs->thread, NULL);
    if (cs->log)
        fclose(cs->log);
    vmig_stats st = {0};
    vmig_stats_get(s, &st);
    secondary_summary(cs, &st);
    vmig_session_free(s);
    rc = cs->rc;
    vmig_error err = cs->err;
    uint64_t id = cs->last_id, failover_at = cs->failover_at;
    free(cs);
    vm->cpus_keep = false;
    if (rc) {
        if (canceled)
            fprintf(stderr, "minivm: standby interrupted: the guest does not run here\n");
        else
            fprintf(stderr, "minivm: standby ended: %s; the guest does not run here\n", err.msg);
        if (vm->sdev && minivm_sdev_refusal(vm->sdev)[0])
            fprintf(stderr, "minivm: the device's state was refused: %s\n",
                    minivm_sdev_refusal(vm->sdev));
        return cli_exit_code(rc);
    }
    /* Failover: RAM and the devices hold checkpoint `id`; its vCPU state
     * goes into KVM now, then it is a received VM like any other. */
    char msg[256];
    if (minivm_cpus_apply_kept(vm, msg, sizeof(msg))) {
        fprintf(stderr, "minivm: failover: the vCPU state of checkpoint %llu: %s\n",
                (unsigned long long)id, msg);
        return MINIVM_EXIT_VM;
    }
    if (!ro->o.quiet)
        fprintf(stderr,
                "minivm: failover: checkpoint %llu's vCPU state applied %.1f ms after the "
                "failover; resuming the guest here\n",
                (unsigned long long)id, ms(now_ns() - failover_at));
    return dest_resume(ro, vm, "at failover");
}

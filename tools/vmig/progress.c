/* Options shared by every command, the progress bar and the summary. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

const char *cli_fmt_bytes(uint64_t v, char *buf, size_t len)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    unsigned u = 0;
    while (d >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        d /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.2f %s" : "%.0f %s", d, unit[u]);
    return buf;
}

int cli_common_opt(cli_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    vmig_error err = {0};
    if (!strcmp(a, "--json")) {
        o->json = true;
        return 1;
    }
    if (!strcmp(a, "--progress")) {
        o->progress = 1;
        return 1;
    }
    if (!strcmp(a, "--no-progress")) {
        o->progress = 0;
        return 1;
    }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
        o->quiet = true;
        o->progress = 0;
        return 1;
    }
    const char *name = NULL, *value = NULL;
    char buf[256];
    if (!strcmp(a, "-c") || !strcmp(a, "--channels")) {
        name = "channels";
    } else if (!strcmp(a, "-o") || !strcmp(a, "--param")) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "vmig: %s needs NAME=VALUE\n", a);
            return -1;
        }
        snprintf(buf, sizeof(buf), "%s", argv[++*i]);
        char *eq = strchr(buf, '=');
        if (!eq) {
            fprintf(stderr, "vmig: %s '%s': expected NAME=VALUE\n", a, buf);
            return -1;
        }
        *eq = 0;
        name = buf;
        value = eq + 1;
    } else if (!strncmp(a, "--", 2)) {
        /* Every parameter is also an option of its own: --max-bandwidth 1G. */
        for (const vmig_param_info *p = vmig_params_table(); p->name; p++)
            if (!strcmp(a + 2, p->name))
                name = p->name;
        if (!name)
            return 0;
    } else {
        return 0;
    }
    if (!value) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "vmig: %s needs a value\n", a);
            return -1;
        }
        value = argv[++*i];
    }
    if (vmig_params_set(&o->params, name, value, &err)) {
        fprintf(stderr, "vmig: %s\n", err.msg);
        return -1;
    }
    return 1;
}

/* text as lines of at most width columns, each indented by indent spaces,
 * broken at spaces (a word longer than the line goes on a line of its own). */
static void print_wrapped(FILE *f, const char *text, int indent, int width)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = p, *cut = NULL;
        while (*end && end - p <= width - indent) {
            if (*end == ' ')
                cut = end;
            end++;
        }
        if (end - p <= width - indent) /* the rest fits */
            cut = end;
        else if (!cut) /* one long word */
            for (cut = p; *cut && *cut != ' '; cut++)
                ;
        if (cut == p)
            break;
        fprintf(f, "%*s%.*s\n", indent, "", (int)(cut - p), p);
        p = cut;
    }
}

void cli_print_common_help(FILE *f)
{
    fprintf(f, "Common options:\n"
               "  -c, --channels N        data channels (same as --param channels=N)\n"
               "  -o, --param NAME=VALUE  set a migration parameter (table below)\n"
               "      --NAME VALUE        the same, e.g. --max-bandwidth 100M\n"
               "      --json              print the summary as one JSON object on stdout\n"
               "      --progress          draw a progress bar on stderr (default when stderr\n"
               "                          is a terminal); --no-progress turns it off\n"
               "  -q, --quiet             no progress and no summary table (errors still\n"
               "                          go to stderr; --json output is still printed)\n"
               "  -h, --help              this help\n\n"
               "Parameters (both sides must agree on channels and packet-pages; the\n"
               "destination takes them from the source):\n");
    for (const vmig_param_info *p = vmig_params_table(); p->name; p++) {
        fprintf(f, "  %-20s %-18s default %s\n", p->name, p->values, p->def);
        print_wrapped(f, p->help, 6, 78);
    }
    fprintf(f, "\nEnvironment:\n"
               "  VMIG_FAULTS=SPEC        arm fault sites in every session, for tests: e.g.\n"
               "                          close:role=src:ch=1:pkt=100 (sites close, stall,\n"
               "                          corrupt, alloc, kill; docs/faults.md)\n");
    fprintf(f, "\nExit status:\n"
               "  0  the migration completed and the destination confirmed it\n"
               "  1  the migration failed (the reason is printed on stderr)\n"
               "  2  bad command line\n"
               "  3  the destination's memory did not match the source (digest mismatch)\n"
               "  4  interrupted by SIGINT or SIGTERM (the migration was canceled)\n");
}

double cli_process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int cli_exit_code(int rc)
{
    switch (rc) {
    case 0:
        return CLI_EXIT_OK;
    case VMIG_EVERIFY:
        return CLI_EXIT_VERIFY;
    case VMIG_ECANCELED:
        return CLI_EXIT_CANCELED;
    case VMIG_EINVAL:
        return CLI_EXIT_FAILED;
    default:
        return CLI_EXIT_FAILED;
    }
}

/* ------------------------------------------------------------------ */
/* running with progress                                               */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

typedef struct run_ctx {
    vmig_session *s;
    cli_run_fn fn;
    void *arg;
    vmig_error err;
    int rc;
    int done; /* atomic */
} run_ctx;

static void *run_thread(void *p)
{
    run_ctx *r = p;
    r->rc = r->fn(r->s, r->arg, &r->err);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void draw(const vmig_stats *st, const char *label)
{
    char a[32], b[32];
    if (st->pass > 1) {
        /* Live pre-copy after pass 1: what is left, and how fast it moves. */
        fprintf(stderr,
                "\r%s pass %-3u remaining %10s  dirty %7.1f MB/s  link %7.1f MB/s  "
                "downtime ~%5.0f ms  throttle %2u%%  %s %5.1fs ",
                label, st->pass, cli_fmt_bytes(st->remaining_bytes, a, sizeof(a)),
                (double)st->dirty_rate / 1e6, (double)st->bandwidth / 1e6,
                (double)st->expected_downtime_ns / 1e6, st->throttle_pct,
                vmig_state_name(st->state), (double)st->elapsed_ns / 1e9);
        return;
    }
    double frac = st->total_bytes ? (double)st->ram_bytes / (double)st->total_bytes : 0;
    if (frac > 1)
        frac = 1;
    int width = 30, fill = (int)(frac * width);
    char bar[40];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = 0;
    double secs = (double)st->elapsed_ns / 1e9;
    double rate = secs > 0 ? (double)st->ram_bytes / secs : 0;
    uint64_t pages = st->normal_pages + st->zero_pages;
    fprintf(stderr, "\r%s [%s] %5.1f%% %s / %s  %7.1f MB/s  zero %4.1f%%  %s %5.1fs ", label, bar,
            frac * 100, cli_fmt_bytes(st->ram_bytes, a, sizeof(a)),
            cli_fmt_bytes(st->total_bytes, b, sizeof(b)), rate / 1e6,
            pages ? 100.0 * (double)st->zero_pages / (double)pages : 0.0,
            vmig_state_name(st->state), secs);
}

/* Notices (a device that failed mid-run, say) go to stderr as they come. */
static void on_event(void *opaque, vmig_session *s, const vmig_event *ev)
{
    (void)s;
    const cli_opts *o = opaque;
    if (ev->type == VMIG_EVENT_NOTICE && ev->message && !o->quiet)
        fprintf(stderr, "\nvmig: notice: %s\n", ev->message);
}

int cli_run(vmig_session *s, cli_run_fn fn, void *arg, const cli_opts *o, const char *label,
            vmig_error *err)
{
    run_ctx r = {.s = s, .fn = fn, .arg = arg};
    vmig_set_event_cb(s, on_event, (void *)o);
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    got_signal = 0;
    bool progress = o->progress > 0 || (o->progress < 0 && isatty(2));
    /* SIGINT and SIGTERM go to this thread only: the worker (and every
     * thread it starts) is created with them blocked. */
    sigset_t stop, old_mask;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old_mask);
    pthread_t t;
    int prc = pthread_create(&t, NULL, run_thread, &r);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (prc) {
        snprintf(err->msg, sizeof(err->msg), "cannot start a thread");
        err->code = VMIG_ENOMEM;
        return VMIG_ENOMEM;
    }
    bool canceled = false;
    unsigned tick = 0;
    while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (got_signal && !canceled) {
            vmig_cancel(s);
            canceled = true;
        }
        if (progress && ++tick % 5 == 0) {
            vmig_stats st;
            vmig_stats_get(s, &st);
            if (st.state != VMIG_STATE_NEW)
                draw(&st, label);
        }
    }
    pthread_join(t, NULL);
    if (progress) {
        vmig_stats st;
        vmig_stats_get(s, &st);
        draw(&st, label);
        fputc('\n', stderr);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    *err = r.err;
    return r.rc;
}

/* ------------------------------------------------------------------ */
/* summary                                                             */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_accel(const vmig_accel_stats *a)
{
    printf(",\"accel\":{\"engine\":");
    json_string(stdout, a->engine);
    printf(",\"batches\":%llu,\"device_pages\":%llu,\"cpu_pages\":%llu,\"tail_pages\":%llu,"
           "\"faults\":%llu,\"untouched\":%llu,\"retries\":%llu,\"fallbacks\":%llu,"
           "\"late\":%llu,\"device_cpu_seconds\":%.3f,\"failed\":%s,\"note\":",
           (unsigned long long)a->batches, (unsigned long long)a->dev_pages,
           (unsigned long long)a->cpu_pages, (unsigned long long)a->tail_pages,
           (unsigned long long)a->faults, (unsigned long long)a->untouched,
           (unsigned long long)a->retries, (unsigned long long)a->fallbacks,
           (unsigned long long)a->late, (double)a->device_cpu_ns / 1e9,
           a->failed ? "true" : "false");
    json_string(stdout, a->note);
    printf("}");
}

/* Who checked the zero pages, when a device did some of it. */
static void print_accel(const vmig_accel_stats *a)
{
    if (!a->engine[0])
        return;
    printf("  %-22s %s\n", "zero-page check", a->engine);
    if (a->batches || a->dev_pages || a->faults || a->untouched)
        printf("  %-22s %llu pages by the device in %llu batches, %llu by the CPU (%llu from "
               "batch tails), %llu never touched (zero, not read); %llu faults, %llu retries, "
               "%llu fallbacks, %llu late batches; device thread %.3f s CPU\n",
               "", (unsigned long long)a->dev_pages, (unsigned long long)a->batches,
               (unsigned long long)a->cpu_pages, (unsigned long long)a->tail_pages,
               (unsigned long long)a->untouched, (unsigned long long)a->faults,
               (unsigned long long)a->retries, (unsigned long long)a->fallbacks,
               (unsigned long long)a->late, (double)a->device_cpu_ns / 1e9);
    if (a->note[0])
        printf("  %-22s %s\n", "", a->note);
}

/* One line per codec that carried pages: share, ratio, time in the codec. */
static void print_codecs(const vmig_stats *st, bool receiver)
{
    uint64_t pages = 0;
    uint32_t used = 0;
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        pages += st->codec[k].pages;
        used += st->codec[k].pages != 0;
    }
    if (!pages || (used == 1 && st->codec[VMIG_CODEC_NONE].pages))
        return; /* nothing compressed: the page counts above say it all */
    char a[32], b[32];
    for (uint32_t k = 0; k < VMIG_CODEC_COUNT; k++) {
        const vmig_codec_stats *c = &st->codec[k];
        if (!c->pages)
            continue;
        char label[40];
        snprintf(label, sizeof(label), "codec %s", vmig_codec_name(k));
        printf("  %-22s %4.1f%% of normal pages, %s -> %s (%.2fx)", label,
               100.0 * (double)c->pages / (double)pages, cli_fmt_bytes(c->in_bytes, a, sizeof(a)),
               cli_fmt_bytes(c->out_bytes, b, sizeof(b)),
               c->out_bytes ? (double)c->in_bytes / (double)c->out_bytes : 0.0);
        if (k != VMIG_CODEC_NONE)
            printf(", %.3f s %s", (double)c->ns / 1e9, receiver ? "decoding" : "encoding");
        if (k == VMIG_CODEC_DEFLATE_PAGE && st->deflate_path[0])
            printf(", %s", st->deflate_path);
        printf("\n");
    }
}

void cli_print_summary(const char *role, int rc, const vmig_error *err, const vmig_stats *st,
                       double process_cpu, const cli_opts *o, const char *extra_json)
{
    double secs = (double)st->elapsed_ns / 1e9;
    if (o->json) {
        printf("{\"role\":\"%s\",\"ok\":%s,\"error\":", role, rc ? "false" : "true");
        json_string(stdout, rc ? err->msg : "");
        printf(",\"state\":\"%s\",\"seconds\":%.6f,\"total_bytes\":%llu,\"ram_bytes\":%llu,"
               "\"wire_bytes\":%llu,\"normal_pages\":%llu,\"zero_pages\":%llu,\"packets\":%llu,"
               "\"mbps\":%.1f,\"thread_cpu_seconds\":%.3f,\"process_cpu_seconds\":%.3f,"
               "\"verify_seconds\":%.3f,\"dirty_track\":\"%s\",\"passes\":%u,"
               "\"dirty_pages\":%llu,\"downtime_seconds\":%.6f,\"throttle_max_pct\":%u,"
               "\"forced_switchover\":%s,\"dirty_sync_seconds\":%.6f,\"channels\":[",
               vmig_state_name(st->state), secs, (unsigned long long)st->total_bytes,
               (unsigned long long)st->ram_bytes, (unsigned long long)st->wire_bytes,
               (unsigned long long)st->normal_pages, (unsigned long long)st->zero_pages,
               (unsigned long long)st->packets, st->mbps, (double)st->cpu_ns / 1e9, process_cpu,
               (double)st->verify_ns / 1e9, vmig_dirty_track_name(st->dirty_track), st->pass,
               (unsigned long long)st->dirty_pages, (double)st->downtime_ns / 1e9,
               st->throttle_max_pct, st->forced ? "true" : "false", (double)st->sync_ns / 1e9);
        for (uint32_t i = 0; i < st->channels; i++)
            printf("%s{\"bytes\":%llu,\"packets\":%llu,\"busy_seconds\":%.3f,"
                   "\"cpu_seconds\":%.3f}",
                   i ? "," : "", (unsigned long long)st->ch[i].bytes,
                   (unsigned long long)st->ch[i].packets, (double)st->ch[i].busy_ns / 1e9,
                   (double)st->ch[i].cpu_ns / 1e9);
        printf("],\"codecs\":{");
        for (uint32_t k = 0, n = 0; k < VMIG_CODEC_COUNT; k++) {
            const vmig_codec_stats *c = &st->codec[k];
            if (!c->packets)
                continue;
            printf("%s\"%s\":{\"packets\":%llu,\"pages\":%llu,\"in_bytes\":%llu,"
                   "\"out_bytes\":%llu,\"ns\":%llu}",
                   n++ ? "," : "", vmig_codec_name(k), (unsigned long long)c->packets,
                   (unsigned long long)c->pages, (unsigned long long)c->in_bytes,
                   (unsigned long long)c->out_bytes, (unsigned long long)c->ns);
        }
        printf("},\"deflate_path\":");
        json_string(stdout, st->deflate_path);
        if (strcmp(role, "receiver"))
            json_accel(&st->accel);
        printf(",\"tls\":{\"protocol\":");
        json_string(stdout, st->tls);
        printf(",\"connections\":%u,\"ktls_connections\":%u,\"ktls_why_not\":", st->tls_conns,
               st->tls_ktls_conns);
        json_string(stdout, st->tls_ktls_why);
        printf("}");
        printf(",\"resume\":{\"reconnects\":%u,\"resent_packets\":%llu,\"resent_bytes\":%llu,"
               "\"window_waits\":%llu}",
               st->reconnects, (unsigned long long)st->resent_packets,
               (unsigned long long)st->resent_bytes, (unsigned long long)st->window_waits);
        printf(",\"devices\":{\"count\":%u,\"path\":\"%s\",\"chunks\":%u,\"bytes\":%llu,"
               "\"iter_bytes\":%llu,\"save_seconds\":%.6f,\"load_seconds\":%.6f,"
               "\"held_max_bytes\":%llu}",
               st->devices, st->dev_path == VMIG_DEVSTATE_CONTROL ? "control" : "channels",
               st->dev_chunks, (unsigned long long)st->dev_bytes,
               (unsigned long long)st->dev_iter_bytes, (double)st->dev_save_ns / 1e9,
               (double)st->dev_load_ns / 1e9, (unsigned long long)st->dev_held_max);
        printf("%s%s}\n", extra_json ? "," : "", extra_json ? extra_json : "");
        fflush(stdout);
        return;
    }
    if (o->quiet)
        return;
    /* A source knows its verify mode; a destination takes the source's and
     * times a digest check only when it made one. */
    bool verified =
        !strcmp(role, "receiver") ? st->verify_ns != 0 : o->params.verify != VMIG_VERIFY_OFF;
    char a[32], b[32];
    printf("\n  %-22s %s\n", "result",
           rc == 0 ? (verified ? "completed, verified" : "completed") : err->msg);
    printf("  %-22s %.3f s\n", "time", secs);
    if (st->pass > 1) /* live: pages sent again count again */
        printf("  %-22s %s for an image of %s\n", "memory sent",
               cli_fmt_bytes(st->ram_bytes, a, sizeof(a)),
               cli_fmt_bytes(st->total_bytes, b, sizeof(b)));
    else
        printf("  %-22s %s of %s\n", "memory covered", cli_fmt_bytes(st->ram_bytes, a, sizeof(a)),
               cli_fmt_bytes(st->total_bytes, b, sizeof(b)));
    printf("  %-22s %.1f MB/s of memory, %.1f MB/s on the wire\n", "throughput",
           secs > 0 ? (double)st->ram_bytes / secs / 1e6 : 0.0, st->mbps);
    printf("  %-22s %s\n", "bytes on the wire", cli_fmt_bytes(st->wire_bytes, a, sizeof(a)));
    printf("  %-22s %llu normal, %llu zero\n", "pages", (unsigned long long)st->normal_pages,
           (unsigned long long)st->zero_pages);
    printf("  %-22s %llu\n", "packets", (unsigned long long)st->packets);
    if (st->devices) {
        bool rx = !strcmp(role, "receiver");
        char c[32];
        printf("  %-22s %u device(s), %s in %u chunks %s", "device state", st->devices,
               cli_fmt_bytes(st->dev_bytes, a, sizeof(a)), st->dev_chunks,
               st->dev_path == VMIG_DEVSTATE_CONTROL ? "on the control channel"
                                                     : "over the data channels");
        if (rx)
            printf("; loads %.1f ms, at most %s held out of order\n", (double)st->dev_load_ns / 1e6,
                   cli_fmt_bytes(st->dev_held_max, c, sizeof(c)));
        else
            printf("; %s during pre-copy, save %.1f ms while stopped\n",
                   cli_fmt_bytes(st->dev_iter_bytes, c, sizeof(c)), (double)st->dev_save_ns / 1e6);
    }
    print_codecs(st, !strcmp(role, "receiver"));
    if (strcmp(role, "receiver"))
        print_accel(&st->accel);
    if (st->dirty_track != VMIG_DIRTY_NONE && strcmp(role, "receiver")) {
        printf("  %-22s %s, %u passes, %llu pages re-sent as dirty, syncs %.3f s\n",
               "live pre-copy", vmig_dirty_track_name(st->dirty_track), st->pass,
               (unsigned long long)st->dirty_pages, (double)st->sync_ns / 1e9);
        printf("  %-22s %.1f ms (VM stopped until the destination committed)%s\n", "downtime",
               (double)st->downtime_ns / 1e6, st->forced ? ", switchover forced by on-limit" : "");
        printf("  %-22s highest %u%%\n", "throttle", st->throttle_max_pct);
    } else if (st->pass > 1) {
        printf("  %-22s %u\n", "passes", st->pass);
    }
    char cpu_label[48];
    snprintf(cpu_label, sizeof(cpu_label), "CPU (%s)", role);
    printf("  %-22s %.3f s in migration threads, %.3f s whole process\n", cpu_label,
           (double)st->cpu_ns / 1e9, process_cpu);
    printf("  %-22s %.3f s\n", "digest check", (double)st->verify_ns / 1e9);
    if (st->tls_conns) {
        printf("  %-22s %s on %u connections, kernel TLS on %u", "TLS", st->tls, st->tls_conns,
               st->tls_ktls_conns);
        if (st->tls_ktls_conns < st->tls_conns && st->tls_ktls_why[0])
            printf(" (%s)", st->tls_ktls_why);
        printf("\n");
    }
    if (st->reconnects || st->window_waits) {
        printf("  %-22s %u channel connection(s) broke and resumed", "resume", st->reconnects);
        if (st->resent_packets)
            printf(", %llu packets (%s) sent again", (unsigned long long)st->resent_packets,
                   cli_fmt_bytes(st->resent_bytes, a, sizeof(a)));
        if (st->window_waits)
            printf(", %llu wait(s) for acknowledgements with the window full",
                   (unsigned long long)st->window_waits);
        printf("\n");
    }
    printf("  %-22s", "channels");
    for (uint32_t i = 0; i < st->channels; i++)
        printf(" [%u] %s %.2fs", i, cli_fmt_bytes(st->ch[i].bytes, a, sizeof(a)),
               (double)st->ch[i].busy_ns / 1e9);
    printf("\n");
    fflush(stdout);
}
